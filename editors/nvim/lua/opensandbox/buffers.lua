-- opensandbox.buffers: sandbox files as buffers named opensandbox://<sandboxId>/<path>
-- (BufReadCmd, BufWriteCmd, FileWriteCmd, FileReadCmd) and directory listings (a name ending
-- in "/", or a path that is a directory; <CR> opens the entry under the cursor).
-- Bytes go through a temporary file read and written by Neovim itself (:read ++edit, :write),
-- so 'fileformat', 'fileencoding', 'bomb', 'eol' and 'fixeol' behave as for a local file and
-- the sandbox gets exactly the bytes the editor writes.
local osb = require('opensandbox')
local util = require('opensandbox.util')

local M = {}
local api = vim.api
local listings = {} -- bufnr -> {id, dir, entries}

local function parse(name)
  local id, path = name:match('^opensandbox://([^/]+)(/.*)$')
  if not id then
    id = name:match('^opensandbox://([^/]+)$')
    path = id and '/'
  end
  return id, path
end
M.parse = parse

local function message(msg)
  api.nvim_echo({ { msg } }, false, {})
end

local function show_error(err)
  vim.notify('OpenSandbox: ' .. util.format_error(err), vim.log.levels.ERROR)
end

-- Wait for one request (file I/O from :e and :w must be done when the command returns).
local function sync(method, params)
  local done, e, r = false, nil, nil
  osb.request(method, params, function(err, res)
    done, e, r = true, err, res
  end)
  vim.wait(osb.config.request_timeout_ms + 2000, function()
    return done
  end, 2)
  if not done then
    return { code = -32007, message = method .. ': no reply', data = { type = 'TimeoutError' } }
  end
  return e, r
end

local function is_dir_error(err)
  local data = err and err.data
  local reason = type(data) == 'table' and util.nonnil(data.reason) or ''
  return err and err.code == -32005
    and (tostring(reason):find('directory') or tostring(err.message):find('Is a directory')) ~= nil
end

local function is_missing_error(err)
  local data = err and err.data
  local reason = type(data) == 'table' and util.nonnil(data.reason) or ''
  return err and err.code == -32005
    and (tostring(reason) .. tostring(err.message)):find('No such file') ~= nil
end

-- ---------------------------------------------------------------------------------------
-- Listings

local function render_listing(buf, id, dir, entries)
  table.sort(entries, function(a, b)
    if a.isDirectory ~= b.isDirectory then
      return a.isDirectory
    end
    return a.name < b.name
  end)
  local lines = { '../' }
  for _, e in ipairs(entries) do
    lines[#lines + 1] = e.name .. (e.isDirectory and '/' or '')
  end
  local bo = vim.bo[buf]
  bo.buftype = 'nofile'
  bo.swapfile = false
  bo.modifiable = true
  api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  bo.modifiable = false
  bo.modified = false
  bo.filetype = 'opensandboxfiles'
  listings[buf] = { id = id, dir = dir, entries = entries }
  vim.keymap.set('n', '<CR>', function()
    M.open_entry(buf)
  end, { buffer = buf, silent = true, desc = 'open the sandbox file or directory' })
end

local function list(buf, id, dir)
  local path = dir == '/' and '/' or dir:gsub('/+$', '')
  local err, res = sync('fs/list', { sandboxId = id, path = path })
  if err then
    return show_error(err)
  end
  render_listing(buf, id, path == '/' and '/' or path .. '/', res.entries)
  message(string.format('opensandbox://%s%s: %d entries', id, path, #res.entries))
end

function M.open_entry(buf)
  local l = listings[buf or api.nvim_get_current_buf()]
  if not l then
    return
  end
  local lnum = api.nvim_win_get_cursor(0)[1]
  local target
  if lnum == 1 then
    local parent = l.dir:gsub('/+$', ''):match('^(.*)/[^/]*$') or ''
    target = parent .. '/'
  else
    local e = l.entries[lnum - 1]
    if not e then
      return
    end
    target = e.path .. (e.isDirectory and '/' or '')
  end
  vim.cmd('edit ' .. vim.fn.fnameescape('opensandbox://' .. l.id .. target))
end

-- ---------------------------------------------------------------------------------------
-- Reading and writing

-- Fetch a sandbox file into a local temporary file. Returns tmp path, or nil, err.
local function fetch(id, path)
  local err, res = sync('fs/read', { sandboxId = id, path = path, encoding = 'base64' })
  if err then
    return nil, err
  end
  local tmp = vim.fn.tempname()
  local ok, werr = util.write_file(tmp, util.b64decode(res.content))
  if not ok then
    return nil, { code = -32005, message = tostring(werr), data = { type = 'FileOperationError' } }
  end
  return tmp
end

function M.read(ev)
  local buf, name = ev.buf, ev.match
  if name == 'opensandbox://output' or name == 'opensandbox://log' then
    return
  end
  local id, path = parse(name)
  if not id then
    return show_error({ message = 'not a sandbox file name: ' .. name
      .. ' (opensandbox://<sandboxId>/<path>)', data = { type = 'UsageError' } })
  end
  if path:sub(-1) == '/' then
    return list(buf, id, path)
  end
  local tmp, err = fetch(id, path)
  if err and is_dir_error(err) then
    return list(buf, id, path .. '/')
  end
  local bo = vim.bo[buf]
  bo.buftype = 'acwrite' -- :w goes through BufWriteCmd
  bo.swapfile = false
  bo.modifiable = true -- a listing before
  vim.b[buf].opensandbox_unread = nil
  if err and is_missing_error(err) then
    message('"' .. name .. '" [New]')
    return
  end
  if err then
    -- The buffer is empty because the read failed, not because the file is: a plain :w must
    -- not replace the file with nothing.
    vim.b[buf].opensandbox_unread = true
    return show_error(err)
  end
  api.nvim_buf_call(buf, function()
    local ul = bo.undolevels
    bo.undolevels = -1 -- loading is not an undoable change
    api.nvim_buf_set_lines(buf, 0, -1, false, {})
    vim.cmd('silent keepalt keepjumps 0read ++edit ' .. vim.fn.fnameescape(tmp))
    if api.nvim_buf_line_count(buf) > 1 then
      vim.cmd('silent keepjumps $delete _')
    end
    bo.undolevels = ul
    api.nvim_win_set_cursor(0, { 1, 0 })
  end)
  local size = vim.fn.getfsize(tmp)
  os.remove(tmp)
  bo.modified = false
  message(string.format('"%s" %dL, %dB', name, api.nvim_buf_line_count(buf), size))
  -- Filetype detection and the user's BufRead autocommands, as for a local file.
  vim.cmd('doautocmd <nomodeline> BufReadPost ' .. vim.fn.fnameescape(name))
end

-- :read opensandbox://... : insert the file below the cursor line.
function M.read_into(ev)
  local id, path = parse(ev.match)
  if not id then
    return
  end
  local tmp, err = fetch(id, path)
  if err then
    return show_error(err)
  end
  -- Neovim sets '[ to the line the text goes below.
  local at = api.nvim_buf_get_mark(ev.buf, '[')[1]
  vim.cmd(string.format('silent keepalt %dread %s', at, vim.fn.fnameescape(tmp)))
  os.remove(tmp)
end

local function write(ev, whole)
  local buf, name = ev.buf, ev.match
  local id, path = parse(name)
  if not id or path:sub(-1) == '/' then
    return show_error({ message = 'cannot write to ' .. name, data = { type = 'UsageError' } })
  end
  if vim.b[buf].opensandbox_unread and name == api.nvim_buf_get_name(buf) and vim.v.cmdbang == 0 then
    return show_error({ message = name .. ' was not read (its read failed); :e! reads it again,'
      .. ' :w! writes this buffer over it', data = { type = 'UsageError' } })
  end
  local tmp = vim.fn.tempname()
  local first = api.nvim_buf_get_mark(buf, '[')[1]
  local last = api.nvim_buf_get_mark(buf, ']')[1]
  local nlines = api.nvim_buf_line_count(buf)
  if first < 1 or last < first then
    first, last = 1, nlines
  end
  -- Neovim writes the bytes (fileformat, encoding, final newline) to a local file first.
  local ok, werr = pcall(api.nvim_buf_call, buf, function()
    vim.cmd(string.format('silent keepalt noautocmd %d,%dwrite! %s', first, last,
      vim.fn.fnameescape(tmp)))
  end)
  local data = ok and util.read_file(tmp)
  os.remove(tmp)
  if not data then
    return show_error({ message = 'could not prepare the write: ' .. tostring(werr),
      data = { type = 'FileOperationError' } })
  end
  local err, res = sync('fs/write', { sandboxId = id, path = path,
    content = util.b64encode(data), encoding = 'base64' })
  if err then
    return show_error(err)
  end
  if whole and first == 1 and last == nlines and name == api.nvim_buf_get_name(buf) then
    vim.bo[buf].modified = false
    vim.b[buf].opensandbox_unread = nil
  end
  message(string.format('"%s" %dL, %dB written', name, last - first + 1, res.bytesWritten))
end

function M.write(ev)
  write(ev, true)
end

function M.write_part(ev)
  write(ev, false)
end

return M
