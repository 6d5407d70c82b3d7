-- opensandbox.client: one opensandbox-bridge process spoken to over LSP framing on pipes
-- (vim.loop). It starts the bridge on first use, sends `initialize` before anything else,
-- matches replies to callbacks, routes `$/progress` chunks, bounds every request with a
-- timer, reports a spawn failure or an early exit at once with the bridge's last stderr
-- lines, and stops the bridge (shutdown, exit, then signals) when asked.
-- All bookkeeping runs on the main loop: libuv callbacks only hand data over via vim.schedule.
local uv = vim.uv or vim.loop -- vim.uv from 0.10 on
local log = require('opensandbox.log')
local util = require('opensandbox.util')

local M = {}
local Client = {}
Client.__index = Client

local STDERR_TAIL = 20

-- A caller's callback that throws must not break the reader: report it and go on.
local function safe(fn, ...)
  local ok, e = pcall(fn, ...)
  if not ok then
    log.add('---', 'callback error: ' .. tostring(e))
    vim.notify('OpenSandbox: ' .. tostring(e), vim.log.levels.ERROR)
  end
end

-- opts: cmd, args (list), env (list of "K=V" or nil to inherit), request_timeout_ms,
-- on_exit(client, code, signal, expected), on_started(client).
function M.new(opts)
  return setmetatable({
    opts = opts,
    handle = nil,
    pid = nil,
    next_id = 0,
    pending = {}, -- id -> {method, cb, timer}
    progress = {}, -- token -> fn(value)
    queue = {}, -- messages waiting for the initialize reply
    ready = false,
    stderr_tail = {},
    info = nil, -- initialize result
    generation = 0, -- bumped on every spawn
  }, Client)
end

function Client:alive()
  return self.handle ~= nil and not self.exited
end

function Client:methods()
  local caps = self.info and self.info.capabilities
  return caps and caps.methods or {}
end

function Client:has_method(name)
  for _, m in ipairs(self:methods()) do
    if m == name then
      return true
    end
  end
  return false
end

function Client:backend()
  local caps = self.info and self.info.capabilities
  return caps and util.nonnil(caps.backend)
end

local function close_handle(h)
  if h and not h:is_closing() then
    h:close()
  end
end

-- Why a program cannot be started, in words, before libuv says ENOENT.
local function check_program(cmd)
  if cmd:find('/') then
    local st = uv.fs_stat(cmd)
    if not st then
      return nil, cmd .. ': no such file'
    end
    if st.type ~= 'file' then
      return nil, cmd .. ': not a regular file'
    end
    if not uv.fs_access(cmd, 'X') then
      return nil, cmd .. ': not executable (no exec permission)'
    end
    return cmd
  end
  local path = vim.fn.exepath(cmd)
  if path == '' then
    return nil, cmd .. ': not found on PATH (set `cmd` in require("opensandbox").setup{})'
  end
  return path
end

local function looks_like_elf(path)
  local head = util.read_file(path)
  return head and head:sub(1, 4) == '\127ELF'
end

-- Start the bridge and send initialize. Returns true, or nil and a message.
function Client:start()
  if self:alive() then
    return true
  end
  if self.handle then
    -- Exited, its last stderr lines still draining: settle the old process before the new.
    self:_finish_exit(self.exit_status[1], self.exit_status[2])
  end
  local path, why = check_program(self.opts.cmd)
  if not path then
    log.add('---', 'spawn failed: ' .. why)
    return nil, 'cannot start opensandbox-bridge: ' .. why
  end
  local stdin, stdout, stderr = uv.new_pipe(false), uv.new_pipe(false), uv.new_pipe(false)
  self.generation = self.generation + 1
  local gen = self.generation
  self.exited, self.ready, self.info, self.stderr_tail = false, false, nil, {}
  self.chunks, self.have, self.need = {}, 0, nil
  self.stdout_eof, self.stderr_eof, self.stderr_partial = false, false, nil
  self.path = path
  local handle, pid = uv.spawn(path, {
    args = self.opts.args,
    stdio = { stdin, stdout, stderr },
    env = self.opts.env,
  }, function(code, signal)
    vim.schedule(function()
      self:_on_exit(gen, code, signal)
    end)
  end)
  if not handle then
    close_handle(stdin)
    close_handle(stdout)
    close_handle(stderr)
    log.add('---', 'spawn failed: ' .. tostring(pid))
    local hint = tostring(pid):find('ENOEXEC', 1, true) and ' (wrong architecture?)' or ''
    return nil, 'cannot start opensandbox-bridge (' .. path .. '): ' .. tostring(pid) .. hint
  end
  self.handle, self.pid = handle, pid
  self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
  local shown = {}
  for i, a in ipairs(self.opts.args or {}) do
    shown[i] = (self.opts.args[i - 1] == '--api-key') and '<redacted>' or a
  end
  log.add('---', string.format('spawned %s %s (pid %d)', path, table.concat(shown, ' '), pid))
  stdout:read_start(function(err, data)
    vim.schedule(function()
      if gen ~= self.generation then
        return
      end
      if data then
        self:_on_stdout(data)
      else
        self.stdout_eof = true
        if err then
          log.add('---', 'stdout read error: ' .. tostring(err))
        end
      end
    end)
  end)
  stderr:read_start(function(_, data)
    vim.schedule(function()
      if gen ~= self.generation then
        return
      end
      if data then
        self:_on_stderr(data)
      else
        self.stderr_eof = true
      end
    end)
  end)
  -- initialize goes first; everything else waits in self.queue for its reply.
  self:_send_now({ jsonrpc = '2.0', id = self:_new_id(), method = 'initialize', params = {
    processId = uv.os_getpid(),
    clientInfo = { name = 'opensandbox.nvim', version = '0.1.0' },
    capabilities = vim.empty_dict(),
  } }, 'initialize', function(err, result)
    if err then
      self:_fail_queue(err)
      return
    end
    self.info = result
    self.ready = true
    self:_send_now({ jsonrpc = '2.0', method = 'initialized', params = vim.empty_dict() })
    local q = self.queue
    self.queue = {}
    for _, msg in ipairs(q) do
      self:_write(msg)
    end
    if self.opts.on_started then
      self.opts.on_started(self)
    end
  end, self.opts.request_timeout_ms)
  return true
end

function Client:_new_id()
  self.next_id = self.next_id + 1
  return self.next_id
end

function Client:_write(msg)
  local body = vim.json.encode(msg)
  log.add('-->', body)
  if self.stdin and not self.stdin:is_closing() then
    self.stdin:write('Content-Length: ' .. #body .. '\r\n\r\n' .. body)
  end
end

-- Register a pending request (with its timer) and write it now.
function Client:_send_now(msg, method, cb, timeout_ms)
  if msg.id and cb then
    self:_track(msg.id, method, cb, timeout_ms)
  end
  self:_write(msg)
end

function Client:_track(id, method, cb, timeout_ms)
  local timer = uv.new_timer()
  local gen = self.generation
  self.pending[id] = { method = method, cb = cb, timer = timer }
  timer:start(timeout_ms, 0, function()
    vim.schedule(function()
      local p = self.pending[id]
      if not p or gen ~= self.generation then
        return
      end
      self.pending[id] = nil
      close_handle(p.timer)
      log.add('---', string.format('request %d (%s) timed out after %d ms', id, method, timeout_ms))
      if self:alive() then
        self:notify('$/cancelRequest', { id = id })
      end
      safe(p.cb, { code = -32007, message = string.format('%s: no reply from the bridge within %d ms',
        method, timeout_ms), data = { type = 'TimeoutError', timeoutMs = timeout_ms } })
    end)
  end)
end

-- Send a request. cb(err, result, ctx) is called exactly once (ctx = {method, id} on replies,
-- as vim.lsp handlers get it). Returns the request id, or nil
-- when the bridge could not be started (cb has then been called already).
function Client:request(method, params, cb, timeout_ms)
  local ok, why = self:start()
  if not ok then
    cb({ code = -32099, message = why, data = { type = 'SpawnError' } })
    return nil
  end
  if params == nil or (type(params) == 'table' and next(params) == nil) then
    params = vim.empty_dict()
  end
  local id = self:_new_id()
  local msg = { jsonrpc = '2.0', id = id, method = method, params = params }
  self:_track(id, method, cb, timeout_ms or self.opts.request_timeout_ms)
  if self.ready then
    self:_write(msg)
  else
    self.queue[#self.queue + 1] = msg
  end
  return id
end

function Client:notify(method, params)
  if not self:alive() then
    return
  end
  local msg = { jsonrpc = '2.0', method = method, params = params or vim.empty_dict() }
  if self.ready then
    self:_write(msg)
  else
    self.queue[#self.queue + 1] = msg
  end
end

function Client:cancel(id)
  if self.pending[id] then
    self:notify('$/cancelRequest', { id = id })
  end
end

function Client:_fail_queue(err)
  local q = self.queue
  self.queue = {}
  for _, msg in ipairs(q) do
    local p = msg.id and self.pending[msg.id]
    if p then
      self.pending[msg.id] = nil
      close_handle(p.timer)
      safe(p.cb, err)
    end
  end
end

function Client:_on_stdout(data)
  self.chunks[#self.chunks + 1] = data
  self.have = self.have + #data
  while true do
    if self.need and self.have < self.need then
      return
    end
    local buf = table.concat(self.chunks)
    local hend = buf:find('\r\n\r\n', 1, true)
    if not hend then
      self.chunks, self.have, self.need = { buf }, #buf, nil
      return
    end
    local len = tonumber(buf:sub(1, hend):match('[Cc]ontent%-[Ll]ength:%s*(%d+)'))
    if not len then
      log.add('---', 'bad frame header from bridge: ' .. buf:sub(1, hend - 1))
      buf = buf:sub(hend + 4)
      self.chunks, self.have, self.need = { buf }, #buf, nil
    elseif #buf < hend + 3 + len then
      self.chunks, self.have, self.need = { buf }, #buf, hend + 3 + len
      return
    else
      local body = buf:sub(hend + 4, hend + 3 + len)
      buf = buf:sub(hend + 4 + len)
      self.chunks, self.have, self.need = { buf }, #buf, nil
      self:_on_message(body)
    end
  end
end

function Client:_on_message(body)
  log.add('<--', body)
  local ok, msg = pcall(vim.json.decode, body)
  if not ok or type(msg) ~= 'table' then
    log.add('---', 'undecodable message from bridge')
    return
  end
  if msg.method == nil then
    local p = self.pending[msg.id]
    if not p then
      return -- a reply to a request that timed out
    end
    self.pending[msg.id] = nil
    close_handle(p.timer)
    local err = util.nonnil(msg.error)
    if err then
      err.data = util.nonnil(err.data)
      safe(p.cb, err, nil, { method = p.method, id = msg.id })
    else
      safe(p.cb, nil, util.nonnil(msg.result), { method = p.method, id = msg.id })
    end
  elseif msg.method == '$/progress' then
    local params = util.nonnil(msg.params) or {}
    local fn = self.progress[params.token]
    if fn then
      safe(fn, util.nonnil(params.value) or {})
    end
  elseif msg.id ~= nil and msg.id ~= vim.NIL then
    -- The bridge does not send requests; answer one politely anyway.
    self:_write({ jsonrpc = '2.0', id = msg.id, error = { code = -32601,
      message = 'method not found: ' .. tostring(msg.method) } })
  end
end

function Client:_on_stderr(data)
  local partial = self.stderr_partial or ''
  local lines = util.split(partial .. data, '\n')
  self.stderr_partial = table.remove(lines)
  for _, line in ipairs(lines) do
    log.add('err', line)
    local tail = self.stderr_tail
    tail[#tail + 1] = line
    if #tail > STDERR_TAIL then
      table.remove(tail, 1)
    end
  end
end

function Client:_on_exit(gen, code, signal)
  if gen ~= self.generation then
    return
  end
  -- stderr may still hold the lines that explain the exit: give it a moment to drain.
  local tries = 0
  local handle = self.handle
  local function finish()
    if self.handle ~= handle then
      return -- settled already by start()
    end
    -- Up to 1 s: on a loaded machine the last lines can come well after the exit itself.
    if not self.stderr_eof and tries < 50 then
      tries = tries + 1
      vim.defer_fn(finish, 20)
      return
    end
    self:_finish_exit(code, signal)
  end
  self.exited = true
  self.exit_status = { code, signal }
  finish()
end

function Client:_finish_exit(code, signal)
  if self.stderr_partial and self.stderr_partial ~= '' then
    self:_on_stderr('\n')
  end
  local expected = self.stopping
  local pid = self.pid
  log.add('---', string.format('bridge (pid %s) exited, code %d, signal %d', tostring(pid), code, signal))
  close_handle(self.stdin)
  close_handle(self.stdout)
  close_handle(self.stderr)
  close_handle(self.handle)
  self.handle, self.stdin, self.stdout, self.stderr = nil, nil, nil, nil
  self.ready = false
  self.queue = {}
  local tail = vim.deepcopy(self.stderr_tail)
  local what = signal ~= 0 and ('was killed by signal ' .. signal) or ('exited with code ' .. code)
  local hint = ''
  if (code == 126 or code == 127) and looks_like_elf(self.path) then
    hint = ' (not an executable for this machine: wrong architecture?)'
  end
  local err = { code = -32099, message = 'opensandbox-bridge ' .. what .. hint,
    data = { type = 'BridgeExited', stderr_tail = tail } }
  local pending = self.pending
  self.pending = {}
  self.progress = {}
  local had_pending = next(pending) ~= nil
  for _, p in pairs(pending) do
    close_handle(p.timer)
    safe(p.cb, err)
  end
  if self.opts.on_exit then
    self.opts.on_exit(self, code, signal, expected, had_pending and err or nil, err)
  end
  self.stopping = false
end

-- Stop the bridge and wait for it (for VimLeavePre): shutdown + exit, then SIGTERM, then
-- SIGKILL, each with a bounded wait. Returns true when the process is gone.
function Client:stop(timeout_ms)
  if not self.handle then
    return true
  end
  self.stopping = true
  timeout_ms = timeout_ms or 2000
  local handle = self.handle
  local gone = function()
    return self.exited
  end
  if not self.exited then
    local replied = false
    self:request('shutdown', nil, function()
      replied = true
    end, timeout_ms)
    vim.wait(timeout_ms, function()
      return replied or self.exited
    end, 5)
    self:notify('exit')
    if self.stdin and not self.stdin:is_closing() then
      self.stdin:shutdown()
    end
    vim.wait(timeout_ms, gone, 5)
  end
  if not self.exited then
    log.add('---', 'bridge lingers after exit: SIGTERM')
    pcall(handle.kill, handle, 'sigterm')
    vim.wait(1000, gone, 5)
  end
  if not self.exited then
    log.add('---', 'bridge lingers after SIGTERM: SIGKILL')
    pcall(handle.kill, handle, 'sigkill')
    vim.wait(1000, gone, 5)
  end
  -- Let the exit bookkeeping (scheduled) run too.
  vim.wait(300, function()
    return self.handle == nil
  end, 5)
  return self.exited
end

-- Kill at once (tests, :OpenSandboxRestart style recovery).
function Client:kill(sig)
  if self.handle then
    pcall(self.handle.kill, self.handle, sig or 'sigkill')
  end
end

return M
