-- Start a rolled-back release again from its first step (kubectl pilotboat retry).
-- A fresh token in status.commands.retry: the operator acts on each token once.
local os = require("os")
if obj.status == nil then obj.status = {} end
if obj.status.commands == nil then obj.status.commands = {} end
obj.status.commands.retry = os.date("!%Y%m%dT%H%M%SZ") .. "-argocd"
return obj
