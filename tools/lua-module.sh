#!/usr/bin/env bash
# Builds the Lua C module and links it as shadowsim.so, so the stock interpreter can
# `require "shadowsim"`:
#   tools/lua-module.sh            # debug build; prints the directory to add to package.cpath
#   LUA_CPATH="$(tools/lua-module.sh)/?.so;;" lua5.4 -e 'print(require("shadowsim").version)'
# (SHADOWSIM_SEED and SHADOWSIM_POLICY set the seed and the default policy.)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh >&2
config=${CONFIG:-debug}
swift build -c "$config" --product ShadowSimLuaModule >&2
dir="$(swift build -c "$config" --show-bin-path)"
ln -sf libShadowSimLuaModule.so "$dir/shadowsim.so"
echo "$dir"
