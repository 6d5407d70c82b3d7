-- opensandbox.commands: what the :OpenSandbox* user commands do. plugin/opensandbox.lua
-- defines the commands and loads this module on first use. Run output goes to the scratch
-- buffer opensandbox://output (live, then a last line with the exit status).
local osb = require('opensandbox')
local util = require('opensandbox.util')
local log = require('opensandbox.log')

local M = {}
local api = vim.api

local function echo(msg)
  api.nvim_echo({ { 'OpenSandbox: ' .. msg } }, false, {})
end

local function fail(op, message, kind)
  osb._done(op, { code = -32602, message = message, data = { type = kind or 'UsageError' } })
end

-- ---------------------------------------------------------------------------------------
-- The output buffer

local out = { buf = nil, partial = false, gen = 0 }

local function scratch(name, filetype)
  local buf = api.nvim_create_buf(false, true)
  local ok = pcall(api.nvim_buf_set_name, buf, name)
  if not ok then
    -- Another buffer holds the name already (the module was reloaded): reuse that one.
    api.nvim_buf_delete(buf, { force = true })
    for _, b in ipairs(api.nvim_list_bufs()) do
      if api.nvim_buf_get_name(b) == name then
        buf = b
      end
    end
    vim.fn.bufload(buf)
  end
  vim.bo[buf].buftype = 'nofile'
  vim.bo[buf].bufhidden = 'hide'
  vim.bo[buf].swapfile = false
  vim.bo[buf].filetype = filetype
  return buf
end

local function show(buf)
  if vim.fn.bufwinid(buf) ~= -1 then
    return
  end
  local cur = api.nvim_get_current_win()
  vim.cmd(osb.config.output_split)
  api.nvim_win_set_buf(0, buf)
  api.nvim_set_current_win(cur)
end

function M.output_buffer()
  if not (out.buf and api.nvim_buf_is_valid(out.buf)) then
    out.buf = scratch('opensandbox://output', 'opensandboxoutput')
  elseif not api.nvim_buf_is_loaded(out.buf) then
    vim.fn.bufload(out.buf) -- after :bdelete
  end
  return out.buf
end

local function follow(buf)
  local last = api.nvim_buf_line_count(buf)
  for _, win in ipairs(vim.fn.win_findbuf(buf)) do
    api.nvim_win_set_cursor(win, { last, 0 })
  end
end

local ns = api.nvim_create_namespace('opensandbox_output')
vim.api.nvim_set_hl(0, 'OpenSandboxStderr', { default = true, link = 'WarningMsg' })
vim.api.nvim_set_hl(0, 'OpenSandboxStatus', { default = true, link = 'Comment' })

-- Append output text; a chunk may end inside a line, the next one goes on with it.
-- Lines that got stderr bytes are highlighted with OpenSandboxStderr. A line left unfinished
-- by one stream is not continued by the other: that starts a new line.
local function append(buf, text, hl)
  if text == '' then
    return
  end
  if out.partial and out.partial_hl ~= hl then
    out.partial = false
  end
  out.partial_hl = hl
  local from = api.nvim_buf_line_count(buf) - (out.partial and 1 or 0)
  local pieces = util.split(text, '\n')
  local n = #pieces
  local lines = {}
  if out.partial then
    local last = api.nvim_buf_line_count(buf)
    local line = api.nvim_buf_get_lines(buf, last - 1, last, false)[1] or ''
    api.nvim_buf_set_lines(buf, last - 1, last, false, { line .. pieces[1] })
  else
    lines[1] = pieces[1]
  end
  for i = 2, n do
    lines[#lines + 1] = pieces[i]
  end
  if n >= 2 and pieces[n] == '' then
    lines[#lines] = nil
    out.partial = false
  else
    out.partial = true
  end
  if #lines > 0 then
    api.nvim_buf_set_lines(buf, -1, -1, false, lines)
  end
  if hl then
    for l = from, api.nvim_buf_line_count(buf) - 1 do
      api.nvim_buf_add_highlight(buf, ns, hl, l, 0, -1)
    end
  end
  follow(buf)
end

local function status_line(err, result)
  if err then
    if err.code == -32800 then
      return { '[cancelled]' }
    end
    return util.split('[error] ' .. util.format_error(err), '\n')
  end
  local lines = {}
  if result.truncated then
    lines[#lines + 1] = '[output truncated]'
  end
  if result.signal and result.signal ~= 0 then
    lines[#lines + 1] = '[killed by signal ' .. result.signal .. ']'
  else
    lines[#lines + 1] = '[exit status ' .. tostring(result.exitCode) .. ']'
  end
  return lines
end

-- Run a shell command into the output buffer. opts.sandbox, opts.prepare(id, done) (done(err))
-- runs before the command, e.g. to write a script file.
local function run_into_output(cmd, title, opts)
  opts = opts or {}
  local buf = M.output_buffer()
  show(buf)
  out.gen = out.gen + 1
  local gen = out.gen
  out.partial = false
  api.nvim_buf_clear_namespace(buf, ns, 0, -1)
  api.nvim_buf_set_lines(buf, 0, -1, false, { '$ ' .. title })
  api.nvim_buf_add_highlight(buf, ns, 'OpenSandboxStatus', 0, 0, -1)
  local function chunk(text)
    if gen == out.gen and api.nvim_buf_is_valid(buf) then
      append(buf, text)
    end
  end
  local function err_chunk(text)
    if gen == out.gen and api.nvim_buf_is_valid(buf) then
      append(buf, text, 'OpenSandboxStderr')
    end
  end
  local function finish(err, result)
    if gen == out.gen and api.nvim_buf_is_valid(buf) then
      local status = status_line(err, result)
      api.nvim_buf_set_lines(buf, -1, -1, false, status)
      local n = api.nvim_buf_line_count(buf)
      for l = n - #status, n - 1 do
        api.nvim_buf_add_highlight(buf, ns, err and 'ErrorMsg' or 'OpenSandboxStatus', l, 0, -1)
      end
      out.partial = false
      follow(buf)
    end
    -- A run's failure is in the buffer already; _done only records it.
    osb.status = { seq = osb.status.seq + 1, op = 'run', err = err, result = result }
    api.nvim_exec_autocmds('User', { pattern = 'OpenSandboxDone', modeline = false })
  end
  osb.with_sandbox(function(id, done)
    local function go()
      osb.run(cmd, { sandbox = id, on_stdout = chunk, on_stderr = err_chunk }, done)
    end
    if opts.prepare then
      opts.prepare(id, function(err)
        if err then
          return done(err)
        end
        go()
      end)
    else
      go()
    end
  end, finish)
end

function M.run(a)
  if a.args == '' then
    return fail('run', ':OpenSandboxRun {cmd}: give a command')
  end
  run_into_output(a.args, a.args)
end

-- ---------------------------------------------------------------------------------------
-- Running the current buffer (or lines of it) by its shebang or filetype

local interpreters = {
  sh = 'sh', bash = 'bash', python = 'python3', javascript = 'node', lua = 'lua',
}
local by_extension = { sh = 'sh', bash = 'bash', py = 'python', js = 'javascript', mjs = 'javascript',
  cjs = 'javascript', lua = 'lua' }

local function interpreter(buf)
  local first = api.nvim_buf_get_lines(buf, 0, 1, false)[1] or ''
  if first:sub(1, 2) == '#!' then
    -- As the kernel reads it: the program, then at most one argument.
    local prog, arg = vim.trim(first:sub(3)):match('^(%S+)%s*(.-)$')
    if prog then
      local words = { util.shquote(prog) }
      if arg ~= '' then
        words[2] = util.shquote(arg)
      end
      return table.concat(words, ' ')
    end
  end
  local ft = vim.bo[buf].filetype
  if ft == '' then
    ft = by_extension[vim.fn.fnamemodify(api.nvim_buf_get_name(buf), ':e')] or ''
  end
  return interpreters[ft], ft
end

local function run_lines(buf, l1, l2)
  local interp, ft = interpreter(buf)
  if not interp then
    return fail('run', string.format('no interpreter for filetype "%s": add a shebang line'
      .. ' or use one of sh, bash, python, javascript (node), lua', ft or ''))
  end
  local lines = api.nvim_buf_get_lines(buf, l1 - 1, l2, false)
  local content = table.concat(lines, '\n') .. '\n'
  local base = vim.fn.fnamemodify(api.nvim_buf_get_name(buf), ':t')
  base = base:gsub('[^%w%._-]', '_')
  if base == '' then
    base = 'buffer' .. buf
  end
  local path = '/tmp/opensandbox-nvim/' .. base
  local cmd = interp .. ' ' .. util.shquote(path)
  run_into_output(cmd, cmd, {
    prepare = function(id, done)
      osb.request('fs/write', { sandboxId = id, path = path, content = util.b64encode(content),
        encoding = 'base64' }, done)
    end,
  })
end

function M.run_file()
  local buf = api.nvim_get_current_buf()
  run_lines(buf, 1, api.nvim_buf_line_count(buf))
end

function M.run_range(a)
  run_lines(api.nvim_get_current_buf(), a.line1, a.line2)
end

-- ---------------------------------------------------------------------------------------
-- Files

function M.files(a)
  local dir = a.args
  osb.with_sandbox(function(id, done)
    if dir ~= '' and dir:sub(1, 1) == '/' then
      return done(nil, { id = id, dir = dir })
    end
    -- A relative dir (or none) is taken from the sandbox's working directory.
    osb.request('sandbox/get', { sandboxId = id }, function(err, info)
      if err then
        return done(err)
      end
      local cwd = util.nonnil(info.cwd) or '/'
      if cwd == '' then
        cwd = '/'
      end
      local full = dir == '' and cwd or (cwd:gsub('/$', '') .. '/' .. dir)
      done(nil, { id = id, dir = full })
    end)
  end, function(err, r)
    if err then
      return osb._done('files', err)
    end
    local d = r.dir:gsub('/+$', '')
    vim.cmd('edit ' .. vim.fn.fnameescape('opensandbox://' .. r.id .. d .. '/'))
    osb._done('files', nil)
  end)
end

-- Host-file methods a bridge or server lacks: copy through JSON (base64) instead.
local function unsupported(err)
  return err and (err.code == -32601 or err.code == -32006)
end

function M.upload(a)
  local localp = a.fargs[1] or api.nvim_buf_get_name(0)
  if localp == '' or localp:match('^%a[%w+.-]*://') then
    return fail('upload', ':OpenSandboxUpload [local] [remote]: no local file given')
  end
  localp = vim.fn.fnamemodify(vim.fn.expand(localp), ':p')
  local remote = a.fargs[2] or vim.fn.fnamemodify(localp, ':t')
  osb.with_sandbox(function(id, done)
    local function through_json()
      local data, rerr = util.read_file(localp)
      if not data then
        return done({ code = -32005, message = tostring(rerr),
          data = { type = 'FileOperationError', localPath = localp } })
      end
      osb.request('fs/write', { sandboxId = id, path = remote, content = util.b64encode(data),
        encoding = 'base64' }, done)
    end
    if not osb.client():has_method('fs/upload') then
      return through_json()
    end
    osb.request('fs/upload', { sandboxId = id, localPath = localp, path = remote }, function(err, r)
      if unsupported(err) then
        return through_json()
      end
      done(err, r)
    end)
  end, function(err, res)
    if not err then
      echo(string.format('uploaded %s to %s (%d bytes)', localp, remote, res.bytesWritten))
    end
    osb._done('upload', err)
  end)
end

function M.download(a)
  local remote = a.fargs[1]
  local localp = a.fargs[2] or vim.fn.fnamemodify(remote, ':t')
  localp = vim.fn.fnamemodify(vim.fn.expand(localp), ':p')
  osb.with_sandbox(function(id, done)
    local function through_json()
      osb.request('fs/read', { sandboxId = id, path = remote, encoding = 'base64' }, function(err, r)
        if err then
          return done(err)
        end
        local data = util.b64decode(r.content)
        local ok, werr = util.write_file(localp, data)
        if not ok then
          return done({ code = -32005, message = tostring(werr),
            data = { type = 'FileOperationError', localPath = localp } })
        end
        done(nil, { bytesRead = #data })
      end)
    end
    if not osb.client():has_method('fs/download') then
      return through_json()
    end
    osb.request('fs/download', { sandboxId = id, path = remote, localPath = localp }, function(err, r)
      if unsupported(err) then
        return through_json()
      end
      done(err, r)
    end)
  end, function(err, res)
    if not err then
      echo(string.format('downloaded %s to %s (%d bytes)', remote, localp, res.bytesRead))
    end
    osb._done('download', err)
  end)
end

-- Completion of sandbox paths (for :OpenSandboxFiles and :OpenSandboxDownload): lists the
-- directory of what is typed, waiting at most complete_timeout_ms. Never creates a sandbox
-- just to complete.
local function remote_paths(arglead, dirs_only)
  local id = osb._state.sandbox
  local c = osb.client()
  if not id or not c:alive() then
    return {}
  end
  local dir = arglead:match('^(.*/)') or ''
  local done, res = false, nil
  osb.request('fs/list', { sandboxId = id, path = dir == '' and '.' or dir }, function(err, r)
    done, res = true, not err and r or nil
  end, { timeout_ms = osb.config.complete_timeout_ms })
  vim.wait(osb.config.complete_timeout_ms, function()
    return done
  end, 2)
  local out = {}
  for _, e in ipairs(res and res.entries or {}) do
    local item = dir .. e.name .. (e.isDirectory and '/' or '')
    if (e.isDirectory or not dirs_only) and item:sub(1, #arglead) == arglead then
      out[#out + 1] = item
    end
  end
  table.sort(out)
  return out
end

function M.complete_dir(arglead)
  return remote_paths(arglead, true)
end

-- :OpenSandboxDownload {remote} [local]: a sandbox path first, then a local file.
function M.complete_download(arglead, cmdline, pos)
  local before = cmdline:sub(1, pos)
  local words = #vim.split(before, '%s+') - 1 -- arguments started so far, this one included
  if words <= 1 then
    return remote_paths(arglead, false)
  end
  return vim.fn.getcompletion(arglead, 'file')
end

-- ---------------------------------------------------------------------------------------
-- Stop, destroy, log

function M.stop()
  if osb.stop_runs() == 0 then
    echo('no command running')
  end
end

function M.destroy(a)
  local id = a.args ~= '' and a.args or osb._state.sandbox
  if not id then
    return fail('destroy', 'no sandbox to destroy', 'NoSandbox')
  end
  osb.destroy(id, function(err)
    if not err then
      echo('destroyed sandbox ' .. id)
    end
    osb._done('destroy', err)
  end)
end

local log_buf = nil

function M.log()
  if not (log_buf and api.nvim_buf_is_valid(log_buf)) then
    log_buf = scratch('opensandbox://log', 'opensandboxlog')
    api.nvim_buf_set_lines(log_buf, 0, -1, false, log.lines())
    log.listen('buffer', function(line)
      if not api.nvim_buf_is_valid(log_buf) then
        return log.unlisten('buffer')
      end
      api.nvim_buf_set_lines(log_buf, -1, -1, false, { line })
    end)
  end
  vim.cmd('split')
  api.nvim_win_set_buf(0, log_buf)
  api.nvim_win_set_cursor(0, { api.nvim_buf_line_count(log_buf), 0 })
end

return M
