-- tests/test_commands.lua: drives every command and the Lua API of the plugin in headless
-- Neovim against the real bridge (OSB_BRIDGE), on the backend the caller chose: local (no
-- OSB_URL) or remote (OSB_URL, OSB_GRPC_PORT of a running opensandboxd). Checks buffer
-- contents and what arrived in the sandbox. Run by tests/e2e/test_editor_nvim.py:
--   nvim --headless -u tests/init.lua -c 'luafile tests/test_commands.lua'
local here = debug.getinfo(1, 'S').source:sub(2):match('(.*)/test_commands.lua$')
local T = dofile(here .. '/runner.lua')
local osb = require('opensandbox')
local util = require('opensandbox.util')
local api = vim.api

local globals_before = {}
for k in pairs(_G) do
  globals_before[k] = true
end

local BRIDGE = assert(os.getenv('OSB_BRIDGE'), 'OSB_BRIDGE not set')
local URL = os.getenv('OSB_URL')
local GRPC = os.getenv('OSB_GRPC_PORT')
local TMP = assert(os.getenv('OSB_TMP'), 'OSB_TMP not set')
local SCALE = tonumber(os.getenv('OSB_TIMEOUT_SCALE') or '1')

local function ms(n)
  return math.floor(n * SCALE)
end

local function configure(extra)
  local cfg = { cmd = BRIDGE, url = URL, grpc_port = GRPC and tonumber(GRPC) or nil,
    complete_timeout_ms = ms(2000), shutdown_timeout_ms = ms(2000) }
  for k, v in pairs(extra or {}) do
    cfg[k] = v
  end
  osb.setup(cfg)
end
configure()

-- Capture vim.notify so that error messages can be checked.
local notes = {}
vim.notify = function(msg, level)
  notes[#notes + 1] = { msg = msg, level = level }
end

local function req(method, params, timeout)
  local done, e, r = false, nil, nil
  osb.request(method, params, function(err, res)
    done, e, r = true, err, res
  end, timeout and { timeout_ms = timeout } or nil)
  T.wait(ms(30000), function()
    return done
  end, method)
  return e, r
end

local function must(method, params)
  local e, r = req(method, params)
  if e then
    error(method .. ' failed: ' .. util.format_error(e), 2)
  end
  return r
end

local function sandbox()
  local done, e, id = false, nil, nil
  osb.sandbox(function(err, sid)
    done, e, id = true, err, sid
  end)
  T.wait(ms(30000), function()
    return done
  end, 'sandbox')
  T.ok(not e, e and util.format_error(e))
  return id
end

-- Run an ex command and wait until the command it starts has finished (status.seq moves).
local function cmd_done(ex, timeout)
  local seq = osb.status.seq
  vim.cmd(ex)
  T.wait(timeout or ms(30000), function()
    return osb.status.seq > seq
  end, ex)
  return osb.status
end

local function output_lines()
  local buf = require('opensandbox.commands').output_buffer()
  return api.nvim_buf_get_lines(buf, 0, -1, false)
end

local function lines()
  return api.nvim_buf_get_lines(0, 0, -1, false)
end

local function put(path, bytes)
  must('fs/write', { sandboxId = sandbox(), path = path, content = util.b64encode(bytes),
    encoding = 'base64' })
end

local function get(path)
  local r = must('fs/read', { sandboxId = sandbox(), path = path, encoding = 'base64' })
  return util.b64decode(r.content)
end

local function features()
  local r = must('server/health', {})
  local f = {}
  for _, name in ipairs(util.nonnil(r.features) or {}) do
    f[name] = true
  end
  return f
end

local function has_program(prog)
  local done, res = false, nil
  osb.run('command -v ' .. prog, {}, function(_, r)
    done, res = true, r
  end)
  T.wait(ms(30000), function()
    return done
  end, 'command -v')
  return res and res.exitCode == 0
end

-- ---------------------------------------------------------------------------------------

T.test('run_echo_hello', function()
  -- Cold: the first command spawns the bridge and creates the sandbox.
  local function timed(label)
    local t0 = vim.loop.hrtime()
    vim.cmd('OpenSandboxRun echo hello')
    local first
    T.wait(ms(30000), function()
      local l = output_lines()
      if not first and l[2] and l[2] ~= '' then
        first = vim.loop.hrtime()
      end
      return l[#l]:match('^%[') ~= nil and #l >= 3
    end, 'run to finish')
    T.measure(label, (first - t0) / 1e6)
  end
  timed('echo_hello_first_output_ms_cold')
  T.eq(output_lines(), { '$ echo hello', 'hello', '[exit status 0]' }, 'output buffer')
  T.eq(api.nvim_buf_get_name(require('opensandbox.commands').output_buffer()),
    'opensandbox://output', 'buffer name')
  local warm = {}
  for i = 1, 5 do
    timed('w')
    warm[i] = T.measures.w
  end
  T.measures.w = nil
  table.sort(warm)
  T.measure('echo_hello_first_output_ms_warm_median', warm[3])
  T.eq(output_lines(), { '$ echo hello', 'hello', '[exit status 0]' }, 'output buffer')
end)

T.test('run_exit_status_stderr_partial_lines', function()
  local st = cmd_done([[OpenSandboxRun printf a; printf 'b\n'; echo oops >&2; printf c; exit 3]])
  T.ok(not st.err, st.err and util.format_error(st.err))
  local l = output_lines()
  T.eq(l[1], [[$ printf a; printf 'b\n'; echo oops >&2; printf c; exit 3]], 'title')
  T.eq(l[#l], '[exit status 3]', 'status line')
  local body = { unpack(l, 2, #l - 1) }
  table.sort(body)
  T.eq(body, { 'ab', 'c', 'oops' }, 'output lines (stdout joined across chunks, the last'
    .. ' one unterminated, stderr on lines of its own)')
  -- stderr lines are highlighted, stdout lines are not.
  local buf = require('opensandbox.commands').output_buffer()
  local ns = api.nvim_create_namespace('opensandbox_output')
  local hl = {}
  for _, m in ipairs(api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true })) do
    hl[l[m[2] + 1]] = m[4].hl_group
  end
  T.eq(hl.oops, 'OpenSandboxStderr', 'stderr highlight')
  T.eq(hl.ab, nil, 'no highlight on stdout')
  cmd_done('OpenSandboxRun kill -9 $$')
  T.eq(output_lines()[#output_lines()], '[killed by signal 9]', 'signal line')
  -- The output buffer comes back after :bdelete and :bwipeout.
  for _, how in ipairs({ 'bdelete!', 'bwipeout!' }) do
    vim.cmd(how .. ' ' .. require('opensandbox.commands').output_buffer())
    cmd_done('OpenSandboxRun echo again')
    T.eq(output_lines(), { '$ echo again', 'again', '[exit status 0]' }, 'after ' .. how)
    T.ok(vim.fn.bufwinid('opensandbox://output') ~= -1, 'shown after ' .. how)
  end
end)

T.test('run_streams_live', function()
  if not features().stream then
    T.skip('the bridge does not stream on this backend yet (server/health features lacks "stream")')
  end
  vim.cmd('OpenSandboxRun echo first; sleep 2; echo second')
  T.wait(ms(10000), function()
    return vim.tbl_contains(output_lines(), 'first')
  end, 'first chunk')
  T.ok(not vim.tbl_contains(output_lines(), 'second'), 'second line arrived with the first')
  T.wait(ms(10000), function()
    return output_lines()[#output_lines()] == '[exit status 0]'
  end, 'end of run')
  T.eq(output_lines(), { '$ echo first; sleep 2; echo second', 'first', 'second', '[exit status 0]' })
end)

local function run_buffer(content, ft, name, ex)
  vim.cmd('enew!')
  if name then
    api.nvim_buf_set_name(0, TMP .. '/' .. name)
  end
  api.nvim_buf_set_lines(0, 0, -1, false, content)
  if ft then
    vim.bo.filetype = ft
  end
  local st = cmd_done(ex or 'OpenSandboxRunFile')
  return st, output_lines()
end

T.test('run_file_shebang', function()
  local _, l = run_buffer({ '#!/bin/sh', 'echo "from shebang $(basename "$0")"' }, nil, 'script')
  T.eq(l[2], 'from shebang script', 'output')
  T.eq(l[#l], '[exit status 0]', 'status')
  T.contains(l[1], "'/bin/sh' '/tmp/opensandbox-nvim/script'", 'title shows the interpreter')
end)

T.test('run_file_by_filetype', function()
  local _, l = run_buffer({ 'import sys', 'print(6 * 7)', 'sys.exit(4)' }, 'python')
  T.eq(l, { "$ python3 '/tmp/opensandbox-nvim/buffer" .. api.nvim_get_current_buf() .. "'",
    '42', '[exit status 4]' }, 'python run')
  _, l = run_buffer({ 'echo "$0" | grep -c opensandbox' }, 'sh')
  T.eq(l[2], '1', 'sh run')
  _, l = run_buffer({ 'print(1 + 1)' }, nil, 'by_extension.py')
  T.eq(l[2], '2', 'filetype from the extension')
  if has_program('node') then
    _, l = run_buffer({ 'console.log([1, 2].map(x => x * 3).join(","))' }, 'javascript')
    T.eq(l[2], '3,6', 'node run')
  end
  local st = run_buffer({ 'x' }, 'haskell')
  T.ok(st.err and st.err.message:find('no interpreter for filetype "haskell"', 1, true),
    'unknown filetype error')
end)

T.test('run_range', function()
  vim.cmd('enew!')
  api.nvim_buf_set_lines(0, 0, -1, false, { 'echo one', 'echo two', 'echo three', 'exit 5' })
  vim.bo.filetype = 'sh'
  cmd_done('2,3OpenSandboxRunRange')
  local l = output_lines()
  T.eq({ l[2], l[3], l[4] }, { 'two', 'three', '[exit status 0]' }, 'range output')
  -- A visual selection gives the range as '<,'>.
  vim.cmd('normal! 3GVj')
  vim.api.nvim_feedkeys(api.nvim_replace_termcodes('<Esc>', true, false, true), 'x', false)
  cmd_done("'<,'>OpenSandboxRunRange")
  l = output_lines()
  T.eq({ l[2], l[3] }, { 'three', '[exit status 5]' }, 'visual range output')
end)

T.test('files_listing_and_open', function()
  local id = sandbox()
  put('/tmp/osbt/d/inner.txt', 'inner\n')
  put('/tmp/osbt/b.txt', 'bee\n')
  cmd_done('OpenSandboxFiles /tmp/osbt')
  T.eq(api.nvim_buf_get_name(0), 'opensandbox://' .. id .. '/tmp/osbt/', 'listing name')
  T.eq(lines(), { '../', 'd/', 'b.txt' }, 'listing')
  local enter = api.nvim_replace_termcodes('<CR>', true, false, true)
  api.nvim_win_set_cursor(0, { 3, 0 })
  api.nvim_feedkeys(enter, 'x', false)
  T.eq(api.nvim_buf_get_name(0), 'opensandbox://' .. id .. '/tmp/osbt/b.txt', 'opened file')
  T.eq(lines(), { 'bee' }, 'file content')
  vim.cmd('edit opensandbox://' .. id .. '/tmp/osbt/')
  api.nvim_win_set_cursor(0, { 2, 0 })
  api.nvim_feedkeys(enter, 'x', false)
  T.eq(lines(), { '../', 'inner.txt' }, 'subdirectory listing')
  api.nvim_win_set_cursor(0, { 1, 0 })
  api.nvim_feedkeys(enter, 'x', false)
  T.eq(api.nvim_buf_get_name(0), 'opensandbox://' .. id .. '/tmp/osbt/', 'parent')
  -- A relative dir is taken from the sandbox's working directory.
  must('sandbox/setCwd', { sandboxId = id, cwd = '/tmp' })
  cmd_done('OpenSandboxFiles osbt')
  T.eq(lines(), { '../', 'd/', 'b.txt' }, 'relative listing')
  must('sandbox/setCwd', { sandboxId = id, cwd = '/' })
end)

T.test('completion_of_sandbox_paths', function()
  sandbox()
  put('/tmp/osbt/d/inner.txt', 'inner\n')
  put('/tmp/osbt/b.txt', 'bee\n')
  T.eq(vim.fn.getcompletion('OpenSandboxFiles /tmp/osbt/', 'cmdline'), { '/tmp/osbt/d/' },
    'directories only')
  T.eq(vim.fn.getcompletion('OpenSandboxDownload /tmp/osbt/', 'cmdline'),
    { '/tmp/osbt/b.txt', '/tmp/osbt/d/' }, 'remote paths')
  T.eq(vim.fn.getcompletion('OpenSandboxDownload /tmp/osbt/b', 'cmdline'), { '/tmp/osbt/b.txt' },
    'prefix')
  assert(util.write_file(TMP .. '/complete-me.txt', ''))
  T.eq(vim.fn.getcompletion('OpenSandboxDownload /tmp/osbt/b.txt ' .. TMP .. '/complete-m',
    'cmdline'), { TMP .. '/complete-me.txt' }, 'local file second')
end)

T.test('edit_write_byte_for_byte', function()
  local id = sandbox()
  local cases = {
    { 'empty', '', '' },
    { 'newline', '\n', '\n' },
    { 'noeol', 'a\nb', 'a\nb\n' }, -- 'fixeol' (the default) adds it, as for a local file
    { 'eol', 'a\nb\n', 'a\nb\n' },
    { 'dos', 'x\r\ny\r\n', 'x\r\ny\r\n' },
    { 'nul', 'a\0b\n', 'a\0b\n' },
    { 'latin1', '\233t\233\n', '\233t\233\n' },
    { 'utf8', 'h\195\169\n\226\130\172 1\n', 'h\195\169\n\226\130\172 1\n' },
    { 'trailing_blank', 'x\n\n\n', 'x\n\n\n' },
  }
  for _, c in ipairs(cases) do
    local path = '/tmp/osbt/edit_' .. c[1]
    put(path, c[2])
    vim.cmd('edit! opensandbox://' .. id .. path)
    T.eq(vim.bo.buftype, 'acwrite', c[1] .. ' buftype')
    vim.cmd('write')
    T.eq(get(path), c[3], c[1] .. ' bytes after :w')
    T.ok(not vim.bo.modified, c[1] .. ' not modified after :w')
    vim.cmd('bwipe!')
  end
  -- 'nofixeol' keeps a missing final newline missing.
  put('/tmp/osbt/noeol2', 'a\nb')
  vim.cmd('edit opensandbox://' .. id .. '/tmp/osbt/noeol2')
  T.eq(lines(), { 'a', 'b' }, 'noeol lines')
  vim.bo.fixeol = false
  vim.cmd('write')
  T.eq(get('/tmp/osbt/noeol2'), 'a\nb', 'nofixeol bytes')
  -- An edit, saved.
  vim.cmd('normal! ggcwchanged')
  T.ok(vim.bo.modified, 'modified after the edit')
  vim.cmd('write')
  T.eq(get('/tmp/osbt/noeol2'), 'changed\nb', 'edited bytes')
  vim.cmd('bwipe!')
  -- A new file.
  vim.cmd('edit opensandbox://' .. id .. '/tmp/osbt/new/file.txt')
  T.eq(lines(), { '' }, 'new file is empty')
  api.nvim_buf_set_lines(0, 0, -1, false, { 'fresh' })
  vim.cmd('write')
  T.eq(get('/tmp/osbt/new/file.txt'), 'fresh\n', 'new file bytes')
  vim.cmd('bwipe!')
  -- :w to another sandbox name and :r of a sandbox file.
  vim.cmd('enew!')
  api.nvim_buf_set_lines(0, 0, -1, false, { 'one', 'two' })
  vim.cmd('write opensandbox://' .. id .. '/tmp/osbt/other.txt')
  T.eq(get('/tmp/osbt/other.txt'), 'one\ntwo\n', ':w {name}')
  vim.cmd('1,1write! opensandbox://' .. id .. '/tmp/osbt/part.txt')
  T.eq(get('/tmp/osbt/part.txt'), 'one\n', ':1,1w {name}')
  vim.cmd('$read opensandbox://' .. id .. '/tmp/osbt/b.txt')
  T.eq(lines(), { 'one', 'two', 'bee' }, ':read')
end)

T.test('upload_download', function()
  local id = sandbox()
  local bytes = {}
  for i = 0, 255 do
    bytes[#bytes + 1] = string.char(i)
  end
  local data = table.concat(bytes):rep(300) .. 'no final newline'
  local localp = TMP .. '/up.bin'
  assert(util.write_file(localp, data))
  local st = cmd_done('OpenSandboxUpload ' .. localp .. ' /tmp/osbt/up.bin')
  T.ok(not st.err, st.err and util.format_error(st.err))
  T.eq(get('/tmp/osbt/up.bin') == data, true, 'uploaded bytes equal')
  -- Default local: the current buffer's file; default remote: its name.
  vim.cmd('edit ' .. localp)
  st = cmd_done('OpenSandboxUpload')
  T.ok(not st.err, st.err and util.format_error(st.err))
  local cwd = util.nonnil(must('sandbox/get', { sandboxId = id }).cwd) or '/'
  T.eq(get(cwd:gsub('/$', '') .. '/up.bin') == data, true, 'default remote name')
  local down = TMP .. '/down.bin'
  st = cmd_done('OpenSandboxDownload /tmp/osbt/up.bin ' .. down)
  T.ok(not st.err, st.err and util.format_error(st.err))
  T.eq(util.read_file(down) == data, true, 'downloaded bytes equal')
  -- Default local name: the remote's basename in Neovim's cwd.
  vim.cmd('cd ' .. TMP)
  os.remove(TMP .. '/b.txt')
  st = cmd_done('OpenSandboxDownload /tmp/osbt/b.txt')
  T.ok(not st.err, st.err and util.format_error(st.err))
  T.eq(util.read_file(TMP .. '/b.txt'), 'bee\n', 'default local name')
end)

T.test('errors_show_type_and_message', function()
  sandbox()
  notes = {}
  local st = cmd_done('OpenSandboxDownload /tmp/osbt/does-not-exist ' .. TMP .. '/x')
  T.ok(st.err, 'download of a missing file fails')
  local msg = notes[#notes] and notes[#notes].msg or ''
  T.ok(msg:match('^OpenSandbox: %[FileOperationError%] '), 'message starts with the type: ' .. msg)
  T.ok(not msg:find('{', 1, true), 'no raw JSON: ' .. msg)
  notes = {}
  local e = req('sandbox/get', { sandboxId = 'no-such-sandbox' })
  T.eq(e.data.type, 'SandboxNotFoundError', 'error data.type via the Lua API')
  vim.cmd('edit opensandbox://no-such-sandbox/x.txt')
  T.contains(notes[#notes] and notes[#notes].msg or '', '[SandboxNotFoundError]', ':e error')
  -- A buffer whose read failed is not written over the file by a plain :w.
  vim.cmd('write')
  T.contains(notes[#notes].msg, 'was not read', ':w after the failed read refused')
  vim.cmd('bwipe!')
  local id = sandbox()
  put('/tmp/osbt/keep.txt', 'precious\n')
  vim.cmd('edit opensandbox://' .. id .. '/tmp/osbt/keep.txt')
  vim.bo.modifiable = true
  vim.b.opensandbox_unread = true -- as a failed read leaves it (a read cannot be made to fail here)
  api.nvim_buf_set_lines(0, 0, -1, false, {})
  vim.cmd('write')
  T.contains(notes[#notes].msg, 'was not read', ':w refused')
  T.eq(get('/tmp/osbt/keep.txt'), 'precious\n', 'file kept')
  vim.cmd('write!')
  T.eq(get('/tmp/osbt/keep.txt'), '', ':w! writes')
  vim.cmd('bwipe!')
end)

T.test('stop_cancels_running_command', function()
  sandbox()
  vim.cmd('OpenSandboxRun echo started; sleep 30; echo never')
  vim.wait(ms(500))
  local t0 = vim.loop.hrtime()
  cmd_done('OpenSandboxStop', ms(10000))
  T.ok((vim.loop.hrtime() - t0) / 1e9 < 10 * SCALE, 'stopped in time')
  local l = output_lines()
  T.eq(l[#l], '[cancelled]', 'status line')
  T.ok(not vim.tbl_contains(l, 'never'), 'the command did not go on')
  T.contains(require('opensandbox.log').lines(), '"method":"$\\/cancelRequest"', 'cancel sent')
  -- The sandbox still works.
  cmd_done('OpenSandboxRun echo after')
  T.eq(output_lines()[2], 'after', 'next run')
end)

T.test('destroy', function()
  local id = sandbox()
  local st = cmd_done('OpenSandboxDestroy')
  T.ok(not st.err, st.err and util.format_error(st.err))
  local e = req('sandbox/get', { sandboxId = id })
  T.ok(e and e.data and e.data.type == 'SandboxNotFoundError', 'sandbox is gone')
  T.eq(osb._state.sandbox, nil, 'no current sandbox')
  cmd_done('OpenSandboxRun echo new')
  T.eq(output_lines()[2], 'new', 'next command uses a new sandbox')
  T.ok(osb._state.sandbox and osb._state.sandbox ~= id, 'new sandbox id')
  st = cmd_done('OpenSandboxDestroy ' .. id)
  T.eq(st.err and st.err.data.type, 'SandboxNotFoundError', 'destroying it again')
  -- Destroyed behind the plugin's back: the next command notices and takes a new one.
  local current = osb._state.sandbox
  must('sandbox/destroy', { sandboxId = current })
  st = cmd_done('OpenSandboxRun echo recreated')
  T.ok(not st.err, st.err and util.format_error(st.err))
  T.eq(output_lines()[2], 'recreated', 'run after an outside destroy')
  T.ok(osb._state.sandbox ~= current, 'another sandbox')
end)

T.test('log_shows_traffic', function()
  cmd_done('OpenSandboxRun echo logged')
  vim.cmd('OpenSandboxLog')
  T.eq(api.nvim_buf_get_name(0), 'opensandbox://log', 'log buffer')
  local l = table.concat(lines(), '\n')
  T.contains(l, ' --> {', 'sent messages')
  T.contains(l, '"method":"sandbox\\/run"', 'the run request')
  T.contains(l, ' <-- {', 'received messages')
  T.contains(l, 'spawned ', 'spawn line')
  local n = api.nvim_buf_line_count(0)
  cmd_done('OpenSandboxRun echo more')
  T.ok(api.nvim_buf_line_count(0) > n, 'the open log grows')
end)

T.test('lua_api', function()
  local id = sandbox()
  local e, r = req('sandbox/list', {})
  T.ok(not e, 'sandbox/list')
  local ids = vim.tbl_map(function(s)
    return s.sandboxId
  end, r.sandboxes)
  T.ok(vim.tbl_contains(ids, id), 'current sandbox listed')
  e = req('no/such', {})
  T.eq(e.code, -32601, 'unknown method')
  local ctx
  local rid = osb.request('server/health', {}, function(_, _, c)
    ctx = c
  end)
  T.wait(ms(10000), function()
    return ctx ~= nil
  end, 'ctx')
  T.eq(ctx, { method = 'server/health', id = rid }, 'handler ctx')
  local env_res
  osb.run('echo "[$OSB_X]"', { env = { OSB_X = 'set' } }, function(_, r)
    env_res = r
  end)
  T.wait(ms(30000), function()
    return env_res ~= nil
  end, 'run with env')
  T.eq(env_res.stdout, '[set]\n', 'run env')
  env_res = nil
  osb.run('echo ok', { env = {}, cwd = '/tmp' }, function(err, r)
    env_res = r or err
  end)
  T.wait(ms(30000), function()
    return env_res ~= nil
  end, 'run with empty env')
  T.eq(env_res.stdout, 'ok\n', 'empty env table')
  local got, res, done = {}, nil, false
  local h = osb.run('printf out; printf err >&2; exit 2', {
    on_stdout = function(s)
      got[#got + 1] = 'o:' .. s
    end,
    on_stderr = function(s)
      got[#got + 1] = 'e:' .. s
    end,
  }, function(err, result)
    done, res = true, result
    T.ok(not err, 'run error')
  end)
  T.ok(type(h.cancel) == 'function', 'run returns a handle')
  T.wait(ms(30000), function()
    return done
  end, 'run')
  T.eq(res.exitCode, 2, 'exit code')
  table.sort(got)
  T.eq(got, { 'e:err', 'o:out' }, 'chunks')
  -- A request timeout is reported as TimeoutError, and cancels the request.
  e = req('sandbox/run', { sandboxId = id, command = 'sleep 5' }, 200)
  T.eq(e.data.type, 'TimeoutError', 'client-side timeout')
end)

T.test('checkhealth', function()
  vim.cmd('checkhealth opensandbox')
  local l = table.concat(lines(), '\n')
  T.contains(l, 'opensandbox', 'section')
  T.contains(l, 'bridge program: ', 'bridge found')
  T.contains(l, 'server answers', 'server health')
  T.ok(not l:find('ERROR'), 'no error: ' .. l)
  vim.cmd('tabclose')
end)

T.test('bridge_killed_restarts_on_next_command', function()
  cmd_done('OpenSandboxRun echo before')
  local c = osb.client()
  local pid = c.pid
  notes = {}
  vim.loop.kill(pid, 'sigkill')
  T.wait(ms(5000), function()
    return not c:alive() and #notes > 0
  end, 'exit noticed')
  T.contains(notes[1].msg, 'killed by signal 9', 'shown at once')
  cmd_done('OpenSandboxRun echo after restart')
  T.eq(output_lines()[2], 'after restart', 'next command works')
  T.ok(c.pid ~= pid and c:alive(), 'a new bridge')
  T.eq(vim.loop.kill(pid, 0), nil, 'old pid is gone')
  -- A command issued the moment the exit is seen (before its bookkeeping ran) works too.
  pid = c.pid
  vim.loop.kill(pid, 'sigkill')
  T.wait(ms(5000), function()
    return c.exited
  end, 'exit seen')
  cmd_done('OpenSandboxRun echo at once')
  T.eq(output_lines()[2], 'at once', 'command right after the exit')
  T.ok(c.pid ~= pid and c:alive(), 'another new bridge')
end)

T.test('spawn_failures_shown_at_once', function()
  local function try(cmd, want)
    configure({ cmd = cmd })
    local t0 = vim.loop.hrtime()
    local st = cmd_done('OpenSandboxRun echo x', ms(5000))
    local took = (vim.loop.hrtime() - t0) / 1e6
    T.ok(st.err, cmd .. ': should fail')
    local l = table.concat(output_lines(), '\n')
    for _, w in ipairs(want) do
      T.contains(l, w, cmd)
    end
    T.ok(took < 3000 * SCALE, cmd .. ': shown in ' .. took .. ' ms')
  end
  try(TMP .. '/missing-bridge', { '[SpawnError]', 'no such file' })
  try('opensandbox-bridge-not-on-path', { '[SpawnError]', 'not found on PATH' })
  local noexec = TMP .. '/noexec-bridge'
  assert(util.write_file(noexec, '#!/bin/sh\n'))
  try(noexec, { '[SpawnError]', 'not executable' })
  -- An ELF for another machine (aarch64 header on this host, or x86-64 elsewhere).
  local machine = (jit and jit.arch == 'arm64') and 62 or 183
  local elf = '\127ELF\2\1\1' .. string.rep('\0', 9) .. '\2\0' .. string.char(machine) .. '\0'
    .. '\1\0\0\0' .. string.rep('\0', 200)
  local wrong = TMP .. '/wrong-arch-bridge'
  assert(util.write_file(wrong, elf))
  vim.loop.fs_chmod(wrong, 493)
  -- libuv either reports ENOEXEC (SpawnError) or lets execvp hand the file to /bin/sh,
  -- which fails (BridgeExited with its stderr); both must name the likely cause.
  try(wrong, { 'wrong architecture' })
  local early = TMP .. '/early-exit-bridge'
  assert(util.write_file(early, '#!/bin/sh\necho "fatal: cannot open state: boom" >&2\nexit 3\n'))
  vim.loop.fs_chmod(early, 493)
  try(early, { '[BridgeExited]', 'exited with code 3', 'fatal: cannot open state: boom' })
  configure()
  cmd_done('OpenSandboxRun echo recovered')
  T.eq(output_lines()[2], 'recovered', 'works again with the real bridge')
end)

T.test('framing_split_anywhere', function()
  -- The LSP frame reader, fed the same bytes cut into pieces of every size: replies and
  -- $/progress chunks come out whole, in order, wherever the cuts fall.
  local function frame(body, header)
    return (header or 'Content-Length') .. ': ' .. #body .. '\r\n\r\n' .. body
  end
  local stream = frame('{"jsonrpc":"2.0","method":"$/progress","params":{"token":"t",'
      .. '"value":{"stdout":"h\\u00e9\\n"}}}')
    .. frame('{"jsonrpc":"2.0","id":7,"result":{"v":"ok"}}', 'content-length')
    .. frame('{"jsonrpc":"2.0","id":8,"error":{"code":-32005,"message":"m",'
      .. '"data":{"type":"FileOperationError"}}}',
      'Content-Type: application/vscode-jsonrpc; charset=utf-8\r\nContent-Length')
  for _, size in ipairs({ 1, 2, 3, 5, 17, 64, #stream }) do
    local c = require('opensandbox.client').new({ cmd = 'unused', request_timeout_ms = 1000 })
    c.chunks, c.have = {}, 0
    local got = {}
    c.pending[7] = { method = 'a', timer = vim.loop.new_timer(), cb = function(err, res)
      got[#got + 1] = 'reply ' .. (err and 'error' or res.v)
    end }
    c.pending[8] = { method = 'b', timer = vim.loop.new_timer(), cb = function(err)
      got[#got + 1] = 'error ' .. err.data.type
    end }
    c.progress.t = function(v)
      got[#got + 1] = 'chunk ' .. v.stdout
    end
    for i = 1, #stream, size do
      c:_on_stdout(stream:sub(i, i + size - 1))
    end
    T.eq(got, { 'chunk h\195\169\n', 'reply ok', 'error FileOperationError' }, 'pieces of ' .. size)
  end
end)

T.test('no_globals_leaked', function()
  local new = {}
  for k in pairs(_G) do
    if not globals_before[k] then
      new[#new + 1] = tostring(k)
    end
  end
  table.sort(new)
  T.eq(new, {}, 'globals the plugin set')
end)

T.test('bridge_stderr_clean', function()
  -- Sanitizer builds of the bridge report on stderr, which the log keeps.
  for _, line in ipairs(require('opensandbox.log').lines()) do
    for _, marker in ipairs({ 'Sanitizer', 'runtime error:' }) do
      T.ok(not (line:find(' err ', 1, true) and line:find(marker, 1, true)), line)
    end
  end
end)

T.run()
