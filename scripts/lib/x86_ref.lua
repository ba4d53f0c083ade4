-- x86_ref.lua -- independent reference model ("oracle") of x86 linear-address
-- translation, for differential testing.  Pure Lua 5.4, no dependencies.
--
-- Written from the Intel SDM vol. 3A chapter 4 (Paging):
--   4.3 32-bit paging, 4.4 PAE paging, 4.5 4-level / 5-level paging,
--   4.6 access rights, 4.7 page-fault exceptions, 4.8 accessed/dirty flags,
-- plus the interpretation rules fixed by the project (see the brief that
-- goes with this file; the places where those rules are a modelling choice
-- rather than SDM text are marked "PROJECT RULE").
--
-- Usage:
--   local ref = require("x86_ref")
--   local r = ref.walk{ mode = "long4", va = ..., access = "read", cpl = 0,
--                       entries = { pml4e, pdpte, pde, pte }, ... }
--   r.outcome  -- "ok" | "pf" | "gp"
--   r.gpa      -- physical address (outcome "ok" only)
--   r.error_code -- #PF error code (outcome "pf" only; CR2 would be va)
--   r.entries  -- new list: the entry values after the access (A/D updated)
--
-- All values are 64-bit patterns held in Lua integers (bit 63 set means a
-- negative Lua integer).  Only `>>` (logical in Lua), `&`, `|` and
-- math.ult are used on them; no arithmetic comparisons on full 64-bit values.

local M = {}

---------------------------------------------------------------------------
-- Bit helpers
---------------------------------------------------------------------------

-- bits hi..lo (inclusive) set; 0 when hi < lo.
local function mask(hi, lo)
  if hi < lo then return 0 end
  local width = hi - lo + 1
  if width >= 64 then return -1 end          -- all 64 bits
  return ((1 << width) - 1) << lo
end

local function bit(v, n)
  return ((v >> n) & 1) == 1
end

local BIT_P   = 0   -- present
local BIT_RW  = 1   -- read/write
local BIT_US  = 2   -- user/supervisor
local BIT_A   = 5   -- accessed
local BIT_D   = 6   -- dirty
local BIT_PS  = 7   -- page size
local BIT_XD  = 63  -- execute-disable

-- #PF error-code bits (SDM 4.7, Figure 4-12)
local EC_P    = 1 << 0
local EC_WR   = 1 << 1
local EC_US   = 1 << 2
local EC_RSVD = 1 << 3
local EC_ID   = 1 << 4

M.mask = mask     -- exported for the self-test / test generators
M.bit = bit

---------------------------------------------------------------------------
-- Mode descriptions
---------------------------------------------------------------------------

-- Level names, top level first.  `entries[i]` is the entry at level i.
local LEVELS = {
  legacy32 = { "PDE", "PTE" },                                -- SDM 4.3
  pae      = { "PDPTE", "PDE", "PTE" },                       -- SDM 4.4
  long4    = { "PML4E", "PDPTE", "PDE", "PTE" },              -- SDM 4.5
  long5    = { "PML5E", "PML4E", "PDPTE", "PDE", "PTE" },     -- SDM 4.5
}
M.LEVELS = LEVELS

local ACCESSES = { read = true, write = true, fetch = true }

local BOOL_ARGS = { "cr0_wp", "cr4_pse", "cr4_pge", "cr4_smep", "cr4_smap",
                    "efer_nxe", "rflags_ac" }

local KNOWN_ARGS = { mode = true, va = true, access = true, cpl = true,
                     maxphyaddr = true, entries = true }
for _, k in ipairs(BOOL_ARGS) do KNOWN_ARGS[k] = true end

---------------------------------------------------------------------------
-- Argument checking (bad arguments raise a Lua error)
---------------------------------------------------------------------------

local function check_args(a)
  if type(a) ~= "table" then error("x86_ref.walk: argument must be a table", 3) end
  for k in pairs(a) do
    if not KNOWN_ARGS[k] then
      error("x86_ref.walk: unknown argument '" .. tostring(k) .. "'", 3)
    end
  end
  local levels = LEVELS[a.mode]
  if not levels then error("x86_ref.walk: unknown mode " .. tostring(a.mode), 3) end
  if not ACCESSES[a.access] then
    error("x86_ref.walk: unknown access " .. tostring(a.access), 3)
  end
  if a.cpl ~= 0 and a.cpl ~= 3 then
    error("x86_ref.walk: cpl must be 0 or 3, got " .. tostring(a.cpl), 3)
  end
  if math.type(a.va) ~= "integer" then error("x86_ref.walk: va must be an integer", 3) end
  if (a.mode == "legacy32" or a.mode == "pae")
     and (a.va < 0 or a.va > 0xFFFFFFFF) then
    error("x86_ref.walk: va must be a 32-bit value in mode " .. a.mode, 3)
  end
  local cfg = {}
  for _, k in ipairs(BOOL_ARGS) do
    local v = a[k]
    if v == nil then v = false end
    if type(v) ~= "boolean" then
      error("x86_ref.walk: " .. k .. " must be a boolean", 3)
    end
    cfg[k] = v
  end
  local maxpa = a.maxphyaddr
  if maxpa == nil then maxpa = 46 end
  if math.type(maxpa) ~= "integer" or maxpa < 32 or maxpa > 52 then
    error("x86_ref.walk: maxphyaddr must be an integer in 32..52, got "
          .. tostring(a.maxphyaddr), 3)
  end
  cfg.maxphyaddr = maxpa
  if type(a.entries) ~= "table" then error("x86_ref.walk: entries must be a list", 3) end
  local n = #a.entries
  if n > #levels then
    error(string.format("x86_ref.walk: %d entries given but mode %s has only %d levels",
                        n, a.mode, #levels), 3)
  end
  for i = 1, n do
    local e = a.entries[i]
    if math.type(e) ~= "integer" then
      error("x86_ref.walk: entries[" .. i .. "] must be an integer", 3)
    end
    if a.mode == "legacy32" and (e < 0 or e > 0xFFFFFFFF) then
      error("x86_ref.walk: legacy32 entries[" .. i .. "] must be a 32-bit value", 3)
    end
  end
  return levels, cfg
end

---------------------------------------------------------------------------
-- Per-level structure: is the entry a leaf, and what are its reserved bits?
---------------------------------------------------------------------------

-- Number of PSE-36 address bits held in a 4 MiB PDE (bits 20:13 hold
-- physical-address bits 39:32).  SDM 4.3: only bits (M-20):13 are address,
-- where M is capped at 40 for 32-bit paging.
local function pse36_bits(maxpa)
  return math.min(maxpa, 40) - 32
end

-- Does the entry at level `lvl` (name) map a page (i.e. end the walk)?
local function is_leaf(mode, name, e, cfg)
  if name == "PTE" then return true end
  if mode == "legacy32" then
    -- SDM 4.3: a PDE maps a 4 MiB page iff CR4.PSE = 1 and PS = 1;
    -- with CR4.PSE = 0 the PS bit is ignored and the PDE references a PT.
    return name == "PDE" and cfg.cr4_pse and bit(e, BIT_PS)
  elseif mode == "pae" then
    -- SDM 4.4.2: PAE PDPTEs always reference a page directory; a PDE with
    -- PS = 1 maps a 2 MiB page regardless of CR4.PSE.
    return name == "PDE" and bit(e, BIT_PS)
  else
    -- SDM 4.5: PML5E / PML4E always reference a table (their PS bit is
    -- reserved, see reserved_mask); PDPTE with PS = 1 maps 1 GiB; PDE with
    -- PS = 1 maps 2 MiB.
    return (name == "PDPTE" or name == "PDE") and bit(e, BIT_PS)
  end
end

-- Reserved-bit mask of the entry `e` at level `name`.
local function reserved_mask(mode, name, e, cfg)
  local m = cfg.maxphyaddr
  if mode == "legacy32" then
    -- SDM 4.3 (Tables 4-4..4-6): only a 4 MiB PDE (CR4.PSE = 1, PS = 1) has
    -- reserved bits: bits 21:(13 + number of PSE-36 address bits).
    -- PDEs referencing a page table and PTEs have none.
    if name == "PDE" and cfg.cr4_pse and bit(e, BIT_PS) then
      return mask(21, 13 + pse36_bits(m))
    end
    return 0
  elseif mode == "pae" then
    if name == "PDPTE" then
      -- SDM 4.4.1 (Table 4-8): PDPTE bits 2:1, 8:5 and 63:M reserved.
      return mask(2, 1) | mask(8, 5) | mask(63, m)
    end
    -- SDM 4.4.2 (Tables 4-9..4-11): bits 62:M reserved; bit 63 (XD) is
    -- reserved when IA32_EFER.NXE = 0.
    local r = mask(62, m)
    if not cfg.efer_nxe then r = r | mask(63, 63) end
    if name == "PDE" and bit(e, BIT_PS) then
      r = r | mask(20, 13)        -- 2 MiB page: bits 20:13 reserved
    end
    return r
  else
    -- SDM 4.5 (Tables 4-14..4-20): bits 51:M reserved in every entry
    -- (bits 62:52 are ignored); bit 63 reserved when IA32_EFER.NXE = 0.
    local r = mask(51, m)
    if not cfg.efer_nxe then r = r | mask(63, 63) end
    if name == "PML5E" or name == "PML4E" then
      r = r | mask(7, 7)          -- PS is reserved in PML5E / PML4E
    elseif name == "PDPTE" and bit(e, BIT_PS) then
      r = r | mask(29, 13)        -- 1 GiB page: bits 29:13 reserved
    elseif name == "PDE" and bit(e, BIT_PS) then
      r = r | mask(20, 13)        -- 2 MiB page: bits 20:13 reserved
    end
    return r
  end
end

-- Physical address produced by leaf entry `e` at level `name`.
local function leaf_gpa(mode, name, e, va, cfg)
  local m = cfg.maxphyaddr
  if mode == "legacy32" then
    if name == "PTE" then
      -- SDM 4.3: 4 KiB page, PA = PTE[31:12] | va[11:0]
      return (e & mask(31, 12)) | (va & mask(11, 0))
    end
    -- SDM 4.3: 4 MiB page, PA[31:22] = PDE[31:22], PA[39:32] = PDE[20:13]
    -- (only min(M,40)-32 of those bits are address), PA[21:0] = va[21:0]
    local hi = (e >> 13) & mask(pse36_bits(m) - 1, 0)
    return (e & mask(31, 22)) | (hi << 32) | (va & mask(21, 0))
  end
  if name == "PTE" then
    return (e & mask(m - 1, 12)) | (va & mask(11, 0))      -- 4 KiB
  elseif name == "PDE" then
    return (e & mask(m - 1, 21)) | (va & mask(20, 0))      -- 2 MiB
  else -- "PDPTE" (long4/long5 only)
    return (e & mask(m - 1, 30)) | (va & mask(29, 0))      -- 1 GiB
  end
end

-- Does this level have an accessed flag / take part in access rights?
-- PROJECT RULE + SDM 4.4.1: the PAE PDPTE has neither A, U/S, R/W nor XD
-- (bits 2:1 and 8:5 are reserved) and is never modified by the walk.
local function is_pae_pdpte(mode, name)
  return mode == "pae" and name == "PDPTE"
end

---------------------------------------------------------------------------
-- Access rights (SDM 4.6)
---------------------------------------------------------------------------

-- Returns true if the access is permitted.
--   user     : U/S = 1 at every controlling level  (user-mode address)
--   writable : R/W = 1 at every controlling level
--   xd       : execute-disable applies (NXE = 1, not 32-bit paging,
--              XD = 1 at some controlling level)
local function access_allowed(a, cfg, user, writable, xd)
  local smap_blocks = cfg.cr4_smap and not cfg.rflags_ac  -- SDM 4.6.1
  if a.cpl == 3 then
    -- User-mode access (SDM 4.6.1)
    if a.access == "read" then
      return user                                 -- reads: user-mode addresses only
    elseif a.access == "write" then
      return user and writable                    -- writes: CR0.WP irrelevant
    else
      return user and not xd                      -- fetches
    end
  else
    -- Supervisor-mode access (SDM 4.6.1); all accesses modelled as explicit.
    if a.access == "read" then
      -- Any supervisor-mode address; user-mode addresses unless SMAP with AC=0.
      if user and smap_blocks then return false end
      return true
    elseif a.access == "write" then
      if user and smap_blocks then return false end
      -- CR0.WP = 0: writes allowed regardless of R/W; WP = 1: need R/W = 1.
      if not cfg.cr0_wp then return true end
      return writable
    else
      -- Fetches: SMEP forbids user-mode addresses; XD forbids any address.
      if user and cfg.cr4_smep then return false end
      return not xd
    end
  end
end

---------------------------------------------------------------------------
-- The walk
---------------------------------------------------------------------------

-- #PF error code (SDM 4.7).  `p` = translation existed (P flag of the code).
local function error_code(a, cfg, p, rsvd)
  local ec = 0
  if p then ec = ec | EC_P end
  if a.access == "write" then ec = ec | EC_WR end
  if a.cpl == 3 then ec = ec | EC_US end
  if rsvd then ec = ec | EC_RSVD end
  -- I/D: instruction fetch AND (CR4.SMEP = 1 OR (CR4.PAE = 1 AND EFER.NXE = 1)).
  -- CR4.PAE = 1 for pae, long4 and long5; 0 for 32-bit paging.
  if a.access == "fetch"
     and (cfg.cr4_smep or (a.mode ~= "legacy32" and cfg.efer_nxe)) then
    ec = ec | EC_ID
  end
  return ec
end

-- PROJECT RULE (from SDM 4.8 "whenever the processor uses a paging-structure
-- entry ... it sets the accessed flag"): set A in levels 1..upto, skipping the
-- PAE PDPTE, which has no A flag.
local function set_accessed(mode, levels, out, upto)
  for i = 1, upto do
    if not is_pae_pdpte(mode, levels[i]) then
      out[i] = out[i] | (1 << BIT_A)
    end
  end
end

local function copy_list(t)
  local c = {}
  for i = 1, #t do c[i] = t[i] end
  return c
end

function M.walk(a)
  local levels, cfg = check_args(a)
  local mode, va = a.mode, a.va
  local out = copy_list(a.entries)   -- result entries (new list)

  -- (a) Canonical-address check (SDM 3.3.7.1 / 4.5): #GP, no walk at all.
  if mode == "long4" then
    local top = va >> 47                      -- bits 63:47, 17 bits
    if top ~= 0 and top ~= 0x1FFFF then
      return { outcome = "gp", entries = out }
    end
  elseif mode == "long5" then
    local top = va >> 56                      -- bits 63:56, 8 bits
    if top ~= 0 and top ~= 0xFF then
      return { outcome = "gp", entries = out }
    end
  end

  -- (b) PROJECT RULE / SDM 4.4.1: a present PAE PDPTE with a reserved bit set
  -- would make the MOV to CR3 fault with #GP(0); report the one-shot walk as gp.
  if mode == "pae" then
    local e = a.entries[1]
    if e == nil then error("x86_ref.walk: too few entries (need PDPTE)", 2) end
    if bit(e, BIT_P) and (e & reserved_mask(mode, "PDPTE", e, cfg)) ~= 0 then
      return { outcome = "gp", entries = out }
    end
  end

  -- Top-down walk (SDM 4.3 / 4.4.2 / 4.5).  At each level: not present ->
  -- #PF (P=0); present with a reserved bit -> #PF (P=1, RSVD=1); else either
  -- the entry is the leaf, or the walk continues to the next level.
  local leaf = nil
  for i = 1, #levels do
    local name = levels[i]
    local e = a.entries[i]
    if e == nil then
      error(string.format("x86_ref.walk: too few entries: mode %s needs the %s (entry %d)",
                          mode, name, i), 2)
    end
    if not bit(e, BIT_P) then
      -- Not present (reserved bits of a non-present entry are ignored).
      -- PROJECT RULE: levels above i were consumed and get A; i and below don't.
      set_accessed(mode, levels, out, i - 1)
      return { outcome = "pf", error_code = error_code(a, cfg, false, false),
               entries = out }
    end
    if (e & reserved_mask(mode, name, e, cfg)) ~= 0 then
      -- SDM 4.7: RSVD = 1, P = 1.  (PAE PDPTE handled above as #GP.)
      set_accessed(mode, levels, out, i - 1)
      return { outcome = "pf", error_code = error_code(a, cfg, true, true),
               entries = out }
    end
    if is_leaf(mode, name, e, cfg) then
      leaf = i
      break
    end
  end
  assert(leaf ~= nil, "walk must end at a leaf")

  -- Combined access rights over the controlling levels (SDM 4.6).  The PAE
  -- PDPTE does not control rights.  XD exists only with NXE = 1 outside of
  -- 32-bit paging.
  local user, writable, xd = true, true, false
  local xd_enabled = cfg.efer_nxe and mode ~= "legacy32"
  for i = 1, leaf do
    if not is_pae_pdpte(mode, levels[i]) then
      local e = a.entries[i]
      if not bit(e, BIT_US) then user = false end
      if not bit(e, BIT_RW) then writable = false end
      if xd_enabled and bit(e, BIT_XD) then xd = true end
    end
  end

  if not access_allowed(a, cfg, user, writable, xd) then
    -- Protection fault: P = 1.  PROJECT RULE: the non-leaf levels get A,
    -- the leaf is unchanged.
    set_accessed(mode, levels, out, leaf - 1)
    return { outcome = "pf", error_code = error_code(a, cfg, true, false),
             entries = out }
  end

  -- Success (SDM 4.8): A in every level used (top through leaf), D in the
  -- leaf on a write.  D is never set in a non-leaf entry.
  set_accessed(mode, levels, out, leaf)
  if a.access == "write" then
    out[leaf] = out[leaf] | (1 << BIT_D)
  end
  return { outcome = "ok", gpa = leaf_gpa(mode, levels[leaf], a.entries[leaf], va, cfg),
           entries = out }
end

return M
