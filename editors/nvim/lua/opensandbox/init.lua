-- opensandbox: the plugin's public Lua API and its state: configuration (setup), the one
-- bridge client, the sandbox the commands use (created on first need), runs with live output,
-- and the clean-up on VimLeavePre (destroy the sandboxes we created, stop the bridge).
-- The commands themselves live in opensandbox.commands; buffers in opensandbox.buffers.
local util = require('opensandbox.util')
local log = require('opensandbox.log')

local M = {}

local defaults = {
  cmd = 'opensandbox-bridge', -- program name (looked up on PATH) or a path
  args = {}, -- extra bridge flags, e.g. { '--log-level', 'info' }
  url = nil, -- OpenSandbox server URL (--url); nil: the bridge's embedded local backend
  grpc_port = nil, -- --grpc-port
  api_key_env = 'OPENSANDBOX_API_KEY', -- environment variable holding the API key
  request_timeout_ms = 30000, -- bound on each request (runs: their timeout + 35 s)
  run_timeout_ms = nil, -- timeoutMs sent with each run (nil: the bridge's default, 300000)
  shutdown_timeout_ms = 2000, -- wait for each step of the shutdown on quit
  complete_timeout_ms = 2000, -- <Tab> completion of sandbox paths waits at most this long
  output_split = 'botright 12split', -- how the output buffer is shown when not visible
  log_max_entries = 5000,
}

M.config = vim.deepcopy(defaults)
M.status = { seq = 0 } -- bumped when a command finishes: {seq, op, err}

local client = nil
local state = {
  sandbox = nil, -- the sandbox the commands use
  creating = nil, -- waiters while sandbox/create is in flight
  created = {}, -- id -> true: sandboxes this plugin created and has not destroyed
  runs = {}, -- request id -> true: runs started by commands (for :OpenSandboxStop)
  token = 0,
}
M._state = state

-- Configure the plugin. Optional: the commands work with the defaults. A running bridge is
-- stopped so that the next command starts one with the new settings.
function M.setup(opts)
  M.config = vim.tbl_deep_extend('force', vim.deepcopy(defaults), opts or {})
  if opts and opts.args then
    M.config.args = opts.args -- lists replace, not merge
  end
  log.max_entries = M.config.log_max_entries
  if client and client:alive() then
    client:stop(M.config.shutdown_timeout_ms)
  end
  client = nil
  return M
end

local function bridge_args()
  local c = M.config
  local args = vim.deepcopy(c.args or {})
  if c.url then
    vim.list_extend(args, { '--url', c.url })
  end
  if c.grpc_port then
    vim.list_extend(args, { '--grpc-port', tostring(c.grpc_port) })
  end
  return args
end

-- The child inherits our environment; when the key lives in another variable it is passed
-- on as OPENSANDBOX_API_KEY, so it is never on the command line or in a settings file.
local function bridge_env()
  local name = M.config.api_key_env
  if not name or name == 'OPENSANDBOX_API_KEY' then
    return nil
  end
  local key = (vim.uv or vim.loop).os_getenv(name)
  if not key then
    return nil
  end
  local env = {}
  for k, v in pairs(vim.fn.environ()) do
    if k ~= 'OPENSANDBOX_API_KEY' then
      env[#env + 1] = k .. '=' .. v
    end
  end
  env[#env + 1] = 'OPENSANDBOX_API_KEY=' .. key
  return env
end

local leave_hooked = false

local function on_exit(c, code, signal, expected, pending_err, err)
  -- The embedded backend's sandboxes die with the bridge.
  if c.info and c:backend() == 'local' or not c.info then
    state.created = {}
    state.sandbox = nil
  end
  state.runs = {}
  if not expected and not pending_err then
    -- Nobody is waiting for an answer who could show this: say it here, at once.
    vim.notify('OpenSandbox: ' .. util.format_error(err), vim.log.levels.ERROR)
  end
end

-- The bridge client, created (not yet started) on first use.
function M.client()
  if not client then
    client = require('opensandbox.client').new({
      cmd = M.config.cmd,
      args = bridge_args(),
      env = bridge_env(),
      request_timeout_ms = M.config.request_timeout_ms,
      on_exit = on_exit,
    })
  end
  if not leave_hooked then
    leave_hooked = true
    vim.api.nvim_create_autocmd('VimLeavePre', {
      group = vim.api.nvim_create_augroup('opensandbox_leave', { clear = true }),
      callback = function()
        M.shutdown()
      end,
    })
  end
  return client
end

-- Send a request to the bridge: callback(err, result, ctx) as vim.lsp handlers have it (err is
-- the JSON-RPC error object {code, message, data}; ctx = {method, id}). opts.timeout_ms bounds
-- the wait. Returns the request id (for M.cancel).
function M.request(method, params, callback, opts)
  opts = opts or {}
  return M.client():request(method, params, callback or function() end, opts.timeout_ms)
end

-- Cancel a request by id ($/cancelRequest); its callback then gets error -32800.
function M.cancel(id)
  if client then
    client:cancel(id)
  end
end

-- callback(err, sandboxId): the sandbox the commands use, created on first need.
function M.sandbox(callback)
  if state.sandbox then
    return callback(nil, state.sandbox)
  end
  if state.creating then
    table.insert(state.creating, callback)
    return
  end
  state.creating = { callback }
  M.request('sandbox/create', {}, function(err, result)
    local waiters = state.creating
    state.creating = nil
    if not err then
      state.sandbox = result.sandboxId
      state.created[result.sandboxId] = true
    end
    for _, cb in ipairs(waiters) do
      cb(err, result and result.sandboxId)
    end
  end)
end

-- Use the sandbox id given, or the current one; when the current one has gone (destroyed
-- elsewhere, its server restarted) forget it and try once more with a new sandbox.
function M.with_sandbox(fn, callback)
  M.sandbox(function(err, id)
    if err then
      return callback(err)
    end
    fn(id, function(err2, result)
      if err2 and err2.code == -32001 and state.sandbox == id then
        state.sandbox = nil
        state.created[id] = nil
        return M.sandbox(function(err3, id2)
          if err3 then
            return callback(err3)
          end
          fn(id2, callback)
        end)
      end
      callback(err2, result)
    end)
  end)
end

-- Run a shell command in the sandbox with live output:
--   handlers.on_stdout(chunk), handlers.on_stderr(chunk) as output arrives;
--   handlers.sandbox (id; default the current sandbox), .cwd, .env, .timeout_ms;
--   on_exit(err, result) with result {stdout, stderr, exitCode, signal, success, truncated}.
-- Returns a handle {cancel = fn}.
function M.run(cmd, handlers, on_exit_cb)
  handlers = handlers or {}
  on_exit_cb = on_exit_cb or function() end
  local h = { id = nil, cancelled = false }
  function h.cancel()
    h.cancelled = true
    if h.id then
      M.cancel(h.id)
    end
  end
  local function start(id, done)
    if h.cancelled then
      return done({ code = -32800, message = 'cancelled', data = { type = 'Cancelled' } })
    end
    state.token = state.token + 1
    local token = 'osb-nvim-' .. state.token
    local got_chunk = false
    local c = M.client()
    local timeout = handlers.timeout_ms or M.config.run_timeout_ms
    local env = handlers.env
    if env and next(env) == nil then
      env = vim.empty_dict() -- an empty Lua table would go out as []
    end
    local params = { sandboxId = id, command = cmd, partialResultToken = token,
      cwd = handlers.cwd, env = env, timeoutMs = timeout }
    c.progress[token] = function(value)
      got_chunk = true
      local out, err = util.nonnil(value.stdout), util.nonnil(value.stderr)
      if out and out ~= '' and handlers.on_stdout then
        handlers.on_stdout(out)
      end
      if err and err ~= '' and handlers.on_stderr then
        handlers.on_stderr(err)
      end
    end
    h.id = c:request('sandbox/run', params, function(err, result)
      c.progress[token] = nil
      state.runs[h.id or -1] = nil
      if not err and not got_chunk then
        -- No streaming from this bridge or server: the output comes with the reply.
        if result.stdout ~= '' and handlers.on_stdout then
          handlers.on_stdout(result.stdout)
        end
        if result.stderr ~= '' and handlers.on_stderr then
          handlers.on_stderr(result.stderr)
        end
      end
      done(err, result)
    end, (timeout or 300000) + 35000)
    if h.id then
      state.runs[h.id] = true
    end
  end
  if handlers.sandbox then
    start(handlers.sandbox, on_exit_cb)
  else
    M.with_sandbox(start, on_exit_cb)
  end
  return h
end

-- Cancel every run the commands started.
function M.stop_runs()
  local n = 0
  for id in pairs(state.runs) do
    M.cancel(id)
    n = n + 1
  end
  return n
end

-- Destroy a sandbox (default: the current one). callback(err).
function M.destroy(id, callback)
  id = id or state.sandbox
  callback = callback or function() end
  if not id then
    return callback({ code = -32602, message = 'no sandbox to destroy',
      data = { type = 'NoSandbox' } })
  end
  M.request('sandbox/destroy', { sandboxId = id }, function(err)
    if not err or err.code == -32001 then
      state.created[id] = nil
      if state.sandbox == id then
        state.sandbox = nil
      end
    end
    callback(err)
  end)
end

-- On quit: destroy the sandboxes we created, then shutdown + exit, and signals if the bridge
-- lingers. Blocks (bounded) so the bridge is gone before Neovim is.
function M.shutdown()
  if not client or not client:alive() then
    return true
  end
  local left = 0
  for id in pairs(state.created) do
    left = left + 1
    M.request('sandbox/destroy', { sandboxId = id }, function()
      left = left - 1
    end, { timeout_ms = M.config.shutdown_timeout_ms })
  end
  vim.wait(M.config.shutdown_timeout_ms + 500, function()
    return left == 0 or not client:alive()
  end, 5)
  state.created, state.sandbox = {}, nil
  return client:stop(M.config.shutdown_timeout_ms)
end

-- Record a finished command for statuslines and tests, and fire User OpenSandboxDone.
function M._done(op, err)
  M.status = { seq = M.status.seq + 1, op = op, err = err }
  if err then
    vim.notify('OpenSandbox: ' .. util.format_error(err), vim.log.levels.ERROR)
  end
  vim.api.nvim_exec_autocmds('User', { pattern = 'OpenSandboxDone', modeline = false })
end

return M
