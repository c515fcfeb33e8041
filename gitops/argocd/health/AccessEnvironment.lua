-- Argo CD health of an AccessEnvironment (access.jpki.dev/v1alpha1), from the status the controller writes
-- (environment_status in src/planner/mod.rs): stale or missing status -> Progressing; Held=True or
-- Stalled=True (a mass revocation held until a person confirms it) -> Degraded; Reconciling=True ->
-- Progressing; AgentsInSync=False (agents still applying the allowlist, stale or missing) -> Progressing;
-- Ready=True -> Healthy; otherwise Progressing.

-- BEGIN shared core: the same in every access.jpki.dev script (tests/argocd_health.rs checks it).
local hs = {}
local status = obj.status or {}
local generation = (obj.metadata or {}).generation

-- The condition of this type in status.conditions, or nil.
local function condition(name)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == name then return c end
  end
  return nil
end

-- True when the condition of this type has status "True".
local function is(name)
  local c = condition(name)
  return c ~= nil and c.status == "True"
end

-- "prefix: message" of a condition (its reason when the message is empty).
local function describe(c, prefix)
  local text = c.message
  if text == nil or text == "" then text = c.reason or c.type end
  if prefix ~= nil and prefix ~= "" then text = prefix .. ": " .. text end
  return text
end

local function result(health, message)
  hs.status = health
  hs.message = message
  return hs
end

-- A message while the controller has not observed the current spec (metadata.generation), else nil.
-- optional: the controller may write no status for this kind; then only a stale observedGeneration counts.
local function unobserved(optional)
  local observed = status.observedGeneration
  if optional and observed == nil then return nil end
  if obj.status == nil or observed == nil or (generation ~= nil and observed < generation) then
    if generation == nil then return "waiting for the controller to write a status" end
    return "waiting for the controller to observe generation " .. tostring(generation)
  end
  return nil
end
-- END shared core

local waiting = unobserved(false)
if waiting then return result("Progressing", waiting) end
for _, name in ipairs({"Held", "Stalled"}) do
  local c = condition(name)
  if is(name) then return result("Degraded", describe(c, c.reason)) end
end
if is("Reconciling") then return result("Progressing", describe(condition("Reconciling"))) end
-- The AgentsInSync condition, not the "n/m" text: Argo CD runs these scripts without the string library.
local agents = status.agentsInSync
local sync = condition("AgentsInSync")
if sync ~= nil and sync.status == "False" then
  return result("Progressing", "agents in sync: " .. (agents or "?") .. " (" .. describe(sync) .. "; waiting for the others to apply the allowlist)")
end
local ready = condition("Ready")
if ready == nil then return result("Progressing", "waiting for the Ready condition") end
local message = describe(ready)
if agents ~= nil then message = message .. "; agents in sync: " .. agents end
if ready.status == "True" then return result("Healthy", message) end
return result("Progressing", message)
