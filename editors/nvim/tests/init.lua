-- tests/init.lua: the init file (-u) for the headless tests: this checkout on 'runtimepath'
-- (so plugin/opensandbox.lua is loaded the normal way), no user config, no swap files.
local here = debug.getinfo(1, 'S').source:sub(2):match('(.*)/tests/init.lua$')
vim.opt.runtimepath:prepend(here)
vim.opt.swapfile = false
vim.opt.shadafile = 'NONE'
vim.opt.more = false
