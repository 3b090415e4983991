#!/bin/sh
# Run the project's Python with ONNX Runtime's AVX2 int8 kernels, on any x86-64 host.
#
# ORT's int8 kernels (MLAS) choose their arithmetic by CPUID: with AVX512-VNNI, AVX-VNNI or AMX
# uint8 x int8 products are summed exactly in int32; on AVX2 without VNNI (e.g. AMD EPYC before
# Zen 4) pairs of them are summed in int16 with saturation. This runs Python under QEMU's
# user-mode emulation of a Haswell CPU (AVX2 and FMA, no AVX-512, no VNNI), so an AVX-512 or AMX
# host computes what an AVX2-only build machine computes; child processes started with
# sys.executable (doit builds in tests) are emulated too. Tiny models only: about 20-50 times
# slower than native, and timings mean nothing under emulation.
#
#   apt-get install qemu-user             # QEMU 7.2 or later (earlier ones have no AVX2)
#   tests/avx2.sh -m pytest tests/test_int8.py tests/test_dynamo.py -p no:cacheprovider
#
# /proc/cpuinfo still describes the host under user-mode emulation, so hostinfo.int8_path() does
# too: build with a store of its own (MODELMAKE_STORE) so that results computed with AVX2
# arithmetic are never stored under this host's int8 path.
set -eu
command -v qemu-x86_64 >/dev/null 2>&1 || {
    echo "tests/avx2.sh: qemu-x86_64 not found; install QEMU user-mode emulation (Debian: apt-get install qemu-user)" >&2
    exit 2
}
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
bindir=$(cd "$(dirname "$python")" && pwd)
# Python finds its virtualenv from argv[0], so the wrapper lives beside the real interpreter
# and passes its own path as argv[0] (-0): sys.executable is then the wrapper, and subprocesses
# of the emulated Python are emulated as well.
wrapper="$bindir/python-avx2"
# Haswell without the features QEMU's TCG cannot emulate (each would print a warning)
cpu="Haswell-noTSX,-pcid,-x2apic,-tsc-deadline,-invpcid"
printf '#!/bin/sh\nexec qemu-x86_64 -cpu %s -0 "$0" "%s" "$@"\n' "$cpu" "$(readlink -f "$python")" > "$wrapper"
chmod +x "$wrapper"
export MODELMAKE_EMULATED_CPU=avx2
exec "$wrapper" "$@"
