-- plugin/opensandbox.lua: defines the :OpenSandbox* commands and the opensandbox:// buffer
-- autocommands, nothing else. Every handler loads the plugin's modules on first use, so an
-- unused plugin costs Neovim's start-up almost nothing (no bridge, no require at start).
if vim.g.loaded_opensandbox or vim.fn.has('nvim-0.7') == 0 then
  return
end
vim.g.loaded_opensandbox = 1

local function command(name, fn, opts)
  vim.api.nvim_create_user_command(name, function(a)
    require('opensandbox.commands')[fn](a)
  end, opts)
end

command('OpenSandboxRun', 'run', { nargs = '+', complete = 'shellcmd' })
command('OpenSandboxRunFile', 'run_file', { nargs = 0 })
command('OpenSandboxRunRange', 'run_range', { nargs = 0, range = '%' })
local function complete(fn)
  return function(...)
    return require('opensandbox.commands')[fn](...)
  end
end

command('OpenSandboxFiles', 'files', { nargs = '?', complete = complete('complete_dir') })
command('OpenSandboxUpload', 'upload', { nargs = '*', complete = 'file' })
command('OpenSandboxDownload', 'download', { nargs = '+', complete = complete('complete_download') })
command('OpenSandboxStop', 'stop', { nargs = 0 })
command('OpenSandboxDestroy', 'destroy', { nargs = '?' })
command('OpenSandboxLog', 'log', { nargs = 0 })

local group = vim.api.nvim_create_augroup('opensandbox', { clear = true })
local function on(event, fn)
  vim.api.nvim_create_autocmd(event, {
    group = group,
    pattern = 'opensandbox://*',
    nested = true,
    callback = function(ev)
      require('opensandbox.buffers')[fn](ev)
    end,
  })
end
on('BufReadCmd', 'read')
on('FileReadCmd', 'read_into')
on('BufWriteCmd', 'write')
on('FileWriteCmd', 'write_part')
