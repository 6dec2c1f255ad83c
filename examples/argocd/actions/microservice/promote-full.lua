-- Skip all remaining steps and promote now (kubectl pilotboat promote --full).
-- A fresh token in status.commands.promoteFull: the operator acts on each token once.
local os = require("os")
if obj.status == nil then obj.status = {} end
if obj.status.commands == nil then obj.status.commands = {} end
obj.status.commands.promoteFull = os.date("!%Y%m%dT%H%M%SZ") .. "-argocd"
return obj
