-- opensandbox.util: small helpers shared by the plugin's modules (base64, splitting, quoting,
-- error formatting). Nothing here touches the bridge or the editor state.
local M = {}

local ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local ENC, DEC = {}, {}
for i = 1, 64 do
  local c = ALPHABET:sub(i, i)
  ENC[i - 1] = c
  DEC[c:byte()] = i - 1
end

-- Plain arithmetic rather than the `bit` library: works on LuaJIT and PUC Lua builds alike.
-- Newer Neovim (0.10+) has vim.base64, which is used when present.
function M.b64encode(s)
  if vim.base64 then
    return vim.base64.encode(s)
  end
  local out, n = {}, #s
  for i = 1, n - 2, 3 do
    local a, b, c = s:byte(i, i + 2)
    local v = a * 65536 + b * 256 + c
    out[#out + 1] = ENC[math.floor(v / 262144)] .. ENC[math.floor(v / 4096) % 64]
      .. ENC[math.floor(v / 64) % 64] .. ENC[v % 64]
  end
  local rest = n % 3
  if rest == 1 then
    local v = s:byte(n) * 65536
    out[#out + 1] = ENC[math.floor(v / 262144)] .. ENC[math.floor(v / 4096) % 64] .. '=='
  elseif rest == 2 then
    local a, b = s:byte(n - 1, n)
    local v = a * 65536 + b * 256
    out[#out + 1] = ENC[math.floor(v / 262144)] .. ENC[math.floor(v / 4096) % 64]
      .. ENC[math.floor(v / 64) % 64] .. '='
  end
  return table.concat(out)
end

function M.b64decode(s)
  if vim.base64 then
    return vim.base64.decode(s)
  end
  s = s:gsub('[^%w%+/]', '')
  local out, n = {}, #s
  local char = string.char
  for i = 1, n, 4 do
    local a, b, c, d = s:byte(i, i + 3)
    local v = DEC[a] * 262144 + (b and DEC[b] or 0) * 4096 + (c and DEC[c] or 0) * 64
      + (d and DEC[d] or 0)
    local x, y, z = math.floor(v / 65536), math.floor(v / 256) % 256, v % 256
    if d then
      out[#out + 1] = char(x, y, z)
    elseif c then
      out[#out + 1] = char(x, y)
    elseif b then
      out[#out + 1] = char(x)
    end
  end
  return table.concat(out)
end

-- Split on a plain separator, keeping empty pieces ("a\n" -> {"a", ""}).
function M.split(s, sep)
  local out, pos = {}, 1
  while true do
    local i = s:find(sep, pos, true)
    if not i then
      out[#out + 1] = s:sub(pos)
      return out
    end
    out[#out + 1] = s:sub(pos, i - 1)
    pos = i + #sep
  end
end

-- Quote one word for /bin/sh.
function M.shquote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

function M.read_file(path)
  local f, err = io.open(path, 'rb')
  if not f then
    return nil, err
  end
  local data = f:read('*a')
  f:close()
  return data
end

function M.write_file(path, data)
  local f, err = io.open(path, 'wb')
  if not f then
    return nil, err
  end
  local ok, werr = f:write(data)
  f:close()
  if not ok then
    return nil, werr
  end
  return true
end

local function nonnil(v)
  if v == vim.NIL then
    return nil
  end
  return v
end
M.nonnil = nonnil

-- "[FileOperationError] /x: No such file or directory": the error's data.type and message,
-- never the raw JSON.
function M.format_error(err)
  if type(err) ~= 'table' then
    return tostring(err)
  end
  local data = nonnil(err.data)
  local kind = type(data) == 'table' and nonnil(data.type) or nil
  if not kind then
    kind = err.code and ('error ' .. tostring(err.code)) or 'error'
  end
  local msg = '[' .. kind .. '] ' .. tostring(nonnil(err.message) or '')
  if type(data) == 'table' and type(data.stderr_tail) == 'table' and #data.stderr_tail > 0 then
    msg = msg .. '\nbridge stderr:\n' .. table.concat(data.stderr_tail, '\n')
  end
  return msg
end

return M
