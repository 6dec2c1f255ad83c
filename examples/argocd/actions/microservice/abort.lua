-- Roll the release back: all traffic to stable, canary scaled to zero (kubectl pilotboat abort).
-- A fresh token in status.commands.abort: the operator acts on each token once.
local os = require("os")
if obj.status == nil then obj.status = {} end
if obj.status.commands == nil then obj.status.commands = {} end
obj.status.commands.abort = os.date("!%Y%m%dT%H%M%SZ") .. "-argocd"
return obj
