-- Argo CD resource actions of a pilotboat.dev Microservice, offered by what its status says:
--   promote, promote-full, abort  while a canary release is under way (Progressing or Paused)
--   retry                         after a release was rolled back (Degraded, with an aborted revision)
-- Each action writes a command token to status.commands, as `kubectl pilotboat promote|abort|retry`
-- do; Argo CD sends a change to status through the status subresource.
local actions = {}
local status = obj.status or {}
local releasing = (status.phase == "Progressing" or status.phase == "Paused")
  and status.canaryVersion ~= nil
local rolled_back = status.phase == "Degraded" and status.release ~= nil
  and status.release.abortedRevision ~= nil
actions["promote"] = { ["disabled"] = not releasing }
actions["promote-full"] = { ["disabled"] = not releasing }
actions["abort"] = { ["disabled"] = not releasing }
actions["retry"] = { ["disabled"] = not rolled_back }
return actions
