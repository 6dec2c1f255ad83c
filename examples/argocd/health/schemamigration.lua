-- Argo CD health of a pilotboat.dev SchemaMigration, from the status the operator writes.
--   Progressing  expand (or its backfill) has not run yet, or contract is running
--   Healthy      expand applied (what the services' sync wave waits for), and later contracted;
--                also after expand while the contract waits for old versions, soak, verify or
--                an approval (the message says so). Never Suspended: Argo CD finishes a resource's
--                sync only once it is Healthy, so a Suspended migration would hold every later
--                sync at its wave, a Git revert of a bad release included, until someone approves.
--   Degraded     refused (unsafe SQL, changed checksum), failed, or its release rolled back
local hs = { status = "Progressing", message = "Waiting for the operator" }

local status = obj.status
if status == nil or status.phase == nil or status.observedGeneration == nil
    or status.observedGeneration < (obj.metadata.generation or 0) then
  return hs
end

local function blocking()
  local names = {}
  for _, g in ipairs(status.gates or {}) do
    if not g.holds then table.insert(names, g.name) end
  end
  return names
end

local phase = status.phase
hs.message = status.message or phase
if phase == "Failed" or phase == "RolledBack" then
  hs.status = "Degraded"
elseif phase == "Contracted" or phase == "Expanded" then
  hs.status = "Healthy"
elseif phase == "AwaitingContract" then
  local gates = blocking()
  hs.status = "Healthy"
  if #gates == 1 and gates[1] == "Approved" then
    hs.message = "expanded; the contract waits for an approval: kubectl pilotboat approve "
      .. obj.metadata.name
  end
else -- Pending, Expanding, BackfillRunning, Contracting
  hs.status = "Progressing"
end
return hs
