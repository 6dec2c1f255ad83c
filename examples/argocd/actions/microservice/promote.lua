-- Go past the current pause or analysis step (kubectl pilotboat promote).
-- A fresh token in status.commands.promote: the operator acts on each token once.
local os = require("os")
if obj.status == nil then obj.status = {} end
if obj.status.commands == nil then obj.status.commands = {} end
obj.status.commands.promote = os.date("!%Y%m%dT%H%M%SZ") .. "-argocd"
return obj
