#!/usr/bin/env bash
# vsb DUT: vswitchd enforcing NetworkPolicy, `policies=N` (default 0) over 1000
# synthetic pods, one policy allowing the generator's traffic to the sink pod.
# Everything else as vswitchd-svc.sh (which does the work).
export VSB_P_policies=${VSB_P_policies:-0}
exec bash "$(dirname "$0")/vswitchd-svc.sh" "$@"
