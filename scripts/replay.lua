-- replay.lua -- a recorded Linux trace replayed through the Linux model, so that `sweep`
-- and `report` take traces: the trace is a parameter.
--
--   shadowsim run scripts/replay.lua --param trace=traces/make-j2.txt.gz --policy xen-oos
--   shadowsim sweep scripts/replay.lua --param trace=traces/make-j2.txt.gz,traces/fork-exec-loop.txt.gz \
--     --param kpti=0,1 --policies kvm-unsync,vm-list,xen-oos -o replays.jsonl
--
-- Parameters: trace (default: the tiny trace of traces/formats), kpti (0/1), events
-- (at most that many), vcpus.
local S = shadowsim
local p = S.params
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local trace = p.trace or S.args[1] or (here .. "/../traces/formats/tiny.tracefs.txt")
local flag = function(v) return v == 1 or v == true or v == "true" or v == "yes" end
local record = S.replay(trace, { kpti = flag(p.kpti), events = p.events, vcpus = p.vcpus })
S.record("replay", record.summary)
local s = record.summary
print(string.format("%s: %d events, %d of %d faults agree, %d of %d flushes match", trace, s.events,
                    s.faults_agreed, s.faults_replayed, s.flushes_matched, s.flushes_traced))
