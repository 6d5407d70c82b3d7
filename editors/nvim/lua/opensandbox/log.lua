-- opensandbox.log: an in-memory log of the bridge's stderr and the JSON-RPC traffic, shown by
-- :OpenSandboxLog. Bounded (oldest entries go first); long messages are cut so a large file
-- transfer cannot blow it up. Secrets never reach it: the API key travels in the environment.
local M = {}

M.max_entries = 5000
M.max_line = 2000
local entries = {}
local first = 1 -- index of the oldest entry still kept
local listeners = {}

local function stamp()
  local sec, usec = (vim.uv or vim.loop).gettimeofday()
  return os.date('!%H:%M:%S', sec) .. string.format('.%03d', math.floor((usec or 0) / 1000))
end

-- kind: "-->" sent, "<--" received, "err" bridge stderr, "---" plugin events.
function M.add(kind, text)
  if #text > M.max_line then
    text = text:sub(1, M.max_line) .. string.format(' ... (%d bytes)', #text)
  end
  text = text:gsub('\n', '\\n')
  local line = stamp() .. ' ' .. kind .. ' ' .. text
  entries[#entries + 1] = line
  if #entries - first + 1 > M.max_entries then
    entries[first] = nil
    first = first + 1
  end
  for _, fn in pairs(listeners) do
    fn(line)
  end
end

function M.lines()
  local out = {}
  for i = first, #entries do
    out[#out + 1] = entries[i]
  end
  return out
end

-- fn(line) is called for each new entry until M.unlisten(key).
function M.listen(key, fn)
  listeners[key] = fn
end

function M.unlisten(key)
  listeners[key] = nil
end

return M
