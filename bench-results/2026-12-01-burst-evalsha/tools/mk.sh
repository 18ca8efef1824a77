#!/bin/bash
# builds the admit script source from a lua dir: header + prelude + admit
d=$1
printf "local SLOT_TENANT_KEY = 'calls:slot_tenant'\nlocal TENANT_LIMITS_KEY = 'calls:tenant_limits'\nlocal REJECTED_TENANT_LIMIT_KEY = 'calls:stats:rejected_tenant_limit'\nlocal function tenant_slots_key(tenant)\n  return 'calls:tenant:' .. tenant .. ':slots'\nend\n\n"
cat $d/prelude.lua; echo; cat $d/admit.lua
