# live-upscale: callbacks for a TouchDesigner Script TOP.
#
# 1. Run windows\setup.ps1 once: it builds the Python 3.11 venv and writes a copy of this file with
#    LIVE_UPSCALE_SITE filled in (it prints where).
# 2. In TD: add a Script TOP, connect the TOP to upscale to its first input, and point the Script TOP's
#    callbacks DAT at that copy (Text DAT > File parameter), or paste it in and set LIVE_UPSCALE_SITE.
# 3. On the Script TOP's "Setup" page pulse "Setup Parameters": the Upscale and Info pages appear.
#
# Everything happens in the live_upscale package; these functions only hand TD's calls over and never
# let an exception reach TD.

import os
import sys

# The venv's site-packages folder (setup.ps1 fills this in; the LIVE_UPSCALE_SITE environment variable works too).
LIVE_UPSCALE_SITE = r""
# The venv goes at the END of sys.path, so TouchDesigner's own modules (numpy, cv2, ...) stay the
# ones TD imports; setup.ps1 pins the venv's numpy to TD's version. Set True only if a package in the
# venv needs a newer copy of something TD also bundles (TD's numpy is imported first even then).
LIVE_UPSCALE_PREPEND = False

_site = LIVE_UPSCALE_SITE or os.environ.get("LIVE_UPSCALE_SITE", "")
if _site and _site not in sys.path:
    try:
        import numpy  # noqa: F401 - TD's bundled numpy, loaded before the venv can shadow it
    except Exception:  # noqa: BLE001 - a TD without numpy: nothing to protect
        pass
    if LIVE_UPSCALE_PREPEND:
        sys.path.insert(0, _site)
    else:
        sys.path.append(_site)

try:
    from live_upscale.plugin import touchdesigner as _lu

    _IMPORT_ERROR = ""
except Exception as _e:  # noqa: BLE001 - shown on the TOP instead of breaking the DAT
    _lu = None
    _IMPORT_ERROR = f"{type(_e).__name__}: {_e}"


def _not_importable(scriptOp):
    try:
        scriptOp.addError(
            f"live-upscale cannot be imported ({_IMPORT_ERROR}). Run windows\\setup.ps1 and set "
            "LIVE_UPSCALE_SITE in this DAT to the site-packages path it prints."
        )
    except Exception:  # noqa: BLE001
        pass


def onSetupParameters(scriptOp):
    if _lu is None:
        return
    _lu.setup_parameters(scriptOp)


def onPulse(par):
    if _lu is not None:
        _lu.pulse(par)


def onCook(scriptOp):
    if _lu is None:
        _not_importable(scriptOp)
        return
    _lu.cook(scriptOp)
