-- Busted specs for the Lua C module: the stock lua5.4 interpreter loads the same
-- bindings the shadowsim command uses. Run by tools/test.sh:
--   LUA_CPATH="$(tools/lua-module.sh)/?.so;;" busted --lua=lua5.4 Tests/busted
local S = require "shadowsim"

describe("the shadowsim module under lua5.4", function()
  it("loads into the stock interpreter", function()
    assert.are.equal("Lua 5.4", _VERSION)
    assert.is_string(S.version)
    assert.is_function(S.vm)
  end)

  describe("a guest", function()
    local vm, space, cpu
    before_each(function()
      vm = S.vm{ mode = "long4", vcpus = 2, memory = "32M" }
      space = vm:space{}
      space:map(0x400000, vm:alloc_frame{})
      cpu = vm.vcpu[1]
      S.expect_ok(cpu:load_cr3(space))
    end)

    it("reads back what it writes, through the shadow MMU", function()
      local gpa = cpu:write(0x400000, 0x1234, 4)
      local value, read_gpa = cpu:read(0x400000, 4)
      assert.are.equal(0x1234, value)
      assert.are.equal(gpa, read_gpa)
      assert.are.equal("kvm-unsync", vm.policy)
    end)

    it("returns nil and the fault for an unmapped page", function()
      local value, fault = cpu:read(0x800000)
      assert.is_nil(value)
      assert.are.equal("pf", fault.kind)
      assert.are.equal(0x800000, fault.cr2)
    end)

    it("raises Lua errors for bad arguments", function()
      assert.has_error(function() cpu:read("x") end, "bad argument #1 to 'read' (integer expected, got string)")
      assert.has_error(function() S.vm{ bogus = 1 } end)
    end)

    it("counts what happened and keeps the MMU consistent", function()
      for i = 1, 10 do cpu:write(0x400000 + i * 8, i) end
      local c = vm:counters()
      assert.is_true(c.writes >= 10)
      assert.is_true(c.exits > 0)
      assert.are.same({}, vm:verify())
    end)
  end)

  it("runs any policy, and bare metal", function()
    for _, p in ipairs{ "bare-metal", "wp-emulate", "tdp" } do
      local vm = S.vm{ policy = p }
      local space = vm:space{}
      space:map(0x400000, vm:alloc_frame{})
      S.expect_ok(vm.vcpu[1]:load_cr3(space))
      assert.is_not_nil(vm.vcpu[1]:write(0x400000, 7))
      assert.are.equal(p, vm.policy)
    end
  end)

  it("has the same counters under every policy, zero where nothing happened", function()
    local names
    for _, p in ipairs{ "bare-metal", "kvm-unsync", "tdp" } do
      local vm = S.vm{ policy = p }
      local c, v = vm:counters(), vm.vcpu[1]:counters()
      local keys = {}
      for k in pairs(c) do keys[#keys + 1] = k end
      table.sort(keys)
      names = names or keys
      assert.are.same(names, keys)
      if p == "bare-metal" then
        assert.are.equal(0, c.exits)
        assert.are.equal(0, c.mmu_unsync)
        assert.are.equal(0, v.exits)
      end
    end
  end)
end)
