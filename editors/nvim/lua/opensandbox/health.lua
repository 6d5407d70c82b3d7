-- opensandbox.health: :checkhealth opensandbox. Works with Neovim 0.7's require('health')
-- (report_start/report_ok/...) and the newer vim.health (start/ok/...). Starts the bridge if
-- it is not running, and asks it for server/health.
local M = {}

local function reporter()
  local h = vim.health or require('health')
  return {
    start = h.start or h.report_start,
    ok = h.ok or h.report_ok,
    warn = h.warn or h.report_warn,
    error = h.error or h.report_error,
    info = h.info or h.report_info,
  }
end

local function wait_request(osb, method, params)
  local done, e, r = false, nil, nil
  osb.request(method, params, function(err, res)
    done, e, r = true, err, res
  end, { timeout_ms = 10000 })
  vim.wait(12000, function()
    return done
  end, 5)
  return e, r
end

function M.check()
  local h = reporter()
  local osb = require('opensandbox')
  local util = require('opensandbox.util')
  h.start('opensandbox')
  if vim.fn.has('nvim-0.7') == 1 then
    h.ok('Neovim ' .. tostring(vim.version().major) .. '.' .. tostring(vim.version().minor))
  else
    h.error('Neovim 0.7 or newer is needed')
  end
  local cfg = osb.config
  local cmd = cfg.cmd
  local path = cmd:find('/') and cmd or vim.fn.exepath(cmd)
  if path == '' or vim.fn.executable(path) ~= 1 then
    h.error('bridge program not found or not executable: ' .. cmd,
      { 'install opensandbox-bridge on PATH, or set `cmd` in require("opensandbox").setup{}' })
    return
  end
  h.ok('bridge program: ' .. path)
  h.info('backend: ' .. (cfg.url and ('remote, ' .. cfg.url) or 'the bridge\'s default (local unless OPENSANDBOX_URL is set)'))
  if cfg.api_key_env and (vim.uv or vim.loop).os_getenv(cfg.api_key_env) then
    h.ok('API key found in $' .. cfg.api_key_env)
  else
    h.info('no API key in $' .. tostring(cfg.api_key_env) .. ' (needed only by servers that ask for one)')
  end
  local err, info = wait_request(osb, 'server/health', {})
  if err then
    h.error('server/health failed: ' .. util.format_error(err))
    return
  end
  local c = osb.client()
  local version = c.info and c.info.serverInfo and c.info.serverInfo.version or '?'
  h.ok(string.format('bridge %s running (pid %d), backend %s', version, c.pid or -1,
    tostring(util.nonnil(info.backend))))
  if info.ok then
    h.ok(string.format('server answers (latency %s ms)', tostring(util.nonnil(info.latencyMs))))
  else
    local url = util.nonnil(info.url)
    h.error('server does not answer' .. (url and (': ' .. tostring(url)) or ''))
  end
  local features = util.nonnil(info.features)
  if type(features) == 'table' and #features > 0 then
    h.ok('features: ' .. table.concat(features, ', '))
  else
    h.info('this bridge reports no features: run output arrives when the command ends')
  end
end

return M
