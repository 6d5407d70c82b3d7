-- tests/runner.lua: a small test runner for headless Neovim (plenary is not packaged in
-- Debian). T.test(name, fn) registers a test; T.run() runs them in order, each under pcall,
-- prints "ok"/"not ok"/"skip" lines, writes the results as JSON to $OSB_NVIM_RESULTS, and
-- quits Neovim with status 0 when nothing failed.
local T = { tests = {}, results = {}, measures = {} }

local SKIP = {}

function T.test(name, fn)
  T.tests[#T.tests + 1] = { name = name, fn = fn }
end

function T.skip(reason)
  error(setmetatable({ reason = reason }, SKIP), 0)
end

function T.eq(got, want, what)
  if not vim.deep_equal(got, want) then
    error(string.format('%s: expected %s, got %s', what or 'value', vim.inspect(want),
      vim.inspect(got)), 2)
  end
end

function T.ok(cond, what)
  if not cond then
    error(what or 'assertion failed', 2)
  end
end

function T.contains(haystack, needle, what)
  if type(haystack) == 'table' then
    haystack = table.concat(haystack, '\n')
  end
  if not tostring(haystack):find(needle, 1, true) then
    error(string.format('%s: %q not found in %q', what or 'text', needle, haystack), 2)
  end
end

-- Wait (bounded) until pred() is true; fails the test with `what` otherwise.
function T.wait(ms, pred, what)
  local ok = vim.wait(ms, pred, 2)
  if not ok then
    error('timed out after ' .. ms .. ' ms waiting for ' .. (what or 'condition'), 2)
  end
end

function T.measure(name, value)
  T.measures[name] = value
end

local function out(line)
  io.stdout:write('\n' .. line .. '\n')
end

function T.run()
  local failed = 0
  for _, t in ipairs(T.tests) do
    local t0 = vim.loop.hrtime()
    local ok, err = xpcall(t.fn, function(e)
      if getmetatable(e) == SKIP then
        return e
      end
      return debug.traceback(tostring(e), 2)
    end)
    local ms = (vim.loop.hrtime() - t0) / 1e6
    local r = { name = t.name, ms = ms }
    if ok then
      r.status = 'pass'
      out(string.format('ok - %s (%.0f ms)', t.name, ms))
    elseif getmetatable(err) == SKIP then
      r.status, r.message = 'skip', err.reason
      out(string.format('skip - %s: %s', t.name, err.reason))
    else
      failed = failed + 1
      r.status, r.message = 'fail', tostring(err)
      out(string.format('not ok - %s: %s', t.name, tostring(err)))
    end
    T.results[#T.results + 1] = r
    -- Leave no window or buffer state behind for the next test.
    pcall(vim.cmd, 'silent! only!')
    pcall(vim.cmd, 'silent! enew!')
  end
  local path = os.getenv('OSB_NVIM_RESULTS')
  if path then
    local f = assert(io.open(path, 'w'))
    f:write(vim.json.encode({ results = T.results, measures = T.measures }))
    f:close()
  end
  out(string.format('%d tests, %d failed', #T.tests, failed))
  vim.cmd((failed == 0 and 'qa!' or 'cq!'))
end

return T
