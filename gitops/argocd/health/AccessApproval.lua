-- Argo CD health of an AccessApproval (access.jpki.dev/v1alpha1). The controller's condition Accepted says whether
-- the decision binds to its registration: Accepted=False (another object, a forged digest, void...) -> Degraded.
-- Otherwise: a stale observedGeneration -> Progressing, Stalled=True -> Degraded, Reconciling=True or Ready=False ->
-- Progressing, else Healthy. A Rejected decision is still a healthy record: its registration reports Rejected.

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

local waiting = unobserved(true)
if waiting then return result("Progressing", waiting) end
local accepted = condition("Accepted")
if accepted ~= nil and accepted.status == "False" then return result("Degraded", describe(accepted, accepted.reason)) end
if is("Stalled") then return result("Degraded", describe(condition("Stalled"))) end
if is("Reconciling") then return result("Progressing", describe(condition("Reconciling"))) end
local ready = condition("Ready")
if ready ~= nil and ready.status ~= "True" then return result("Progressing", describe(ready)) end
if ready ~= nil then return result("Healthy", describe(ready)) end
local spec = obj.spec or {}
return result("Healthy", "recorded: " .. tostring(spec.decision) .. " by " .. tostring(spec.approvedBy)
  .. " for registration " .. tostring(spec.registrationRef))
