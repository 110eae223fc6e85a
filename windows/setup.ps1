<#
.SYNOPSIS
  live-upscale for TouchDesigner on Windows: a Python 3.11 venv with CUDA torch, this package and
  (with -Rtx) NVIDIA's nvidia-vfx for RTX Video Super Resolution.

.DESCRIPTION
  TouchDesigner 2023 builds run Python 3.11, so the venv must be 3.11 too. The script
    1. finds Python 3.11 (the "py" launcher, else python.exe on PATH),
    2. creates the venv (default: .venv in the repository root, i.e. next to the project),
    3. pins numpy to the version TouchDesigner bundles (read from TD's own Python or its
       site-packages; -Numpy overrides), then installs torch from PyTorch's CUDA index and this
       package (editable, with the [remote] extra for upscaling on a cloud GPU running "live-upscale serve")
       under that pin, so pip never brings a numpy that breaks TD's modules,
    4. with -Rtx, installs nvidia-vfx from NVIDIA's package index (https://pypi.nvidia.com),
    5. runs "live-upscale doctor" to show which backends can run,
    6. writes a Script TOP callbacks file with the venv path filled in, and prints the line to add to TD.

.PARAMETER Venv      Where to create the venv (default: <repo>\.venv).
.PARAMETER Cuda      PyTorch CUDA wheel tag: cu128 (default; driver 570+), cu126, cu130.
.PARAMETER Rtx       Also install nvidia-vfx (RTX VSR; RTX GPU with driver 570.65+).
.PARAMETER Torch     pip requirement for torch (default "torch"; e.g. "torch==2.4.1" if a newer one fails to load in TD).
.PARAMETER Python    Path of a Python 3.11 python.exe (default: found with the "py -3.11" launcher, else python on PATH).
.PARAMETER TouchDesigner  TouchDesigner's install folder, to read its bundled numpy version
                    (default: the newest C:\Program Files\Derivative\TouchDesigner*).
.PARAMETER Numpy     numpy version to pin instead of reading TD's (e.g. "1.24.1"). When TD's
                    version cannot be read, "numpy>=1.24,<2" is used: TD's modules are built
                    against numpy 1.x, and a numpy 2 breaks them.
.PARAMETER Force     Delete and re-create an existing venv.

.EXAMPLE
  powershell -ExecutionPolicy Bypass -File windows\setup.ps1 -Rtx
#>
[CmdletBinding()]
param(
    [string]$Venv = "",
    [string]$Cuda = "cu128",
    [string]$Torch = "torch",
    [switch]$Rtx,
    [string]$Python = "",
    [string]$TouchDesigner = "",
    [string]$Numpy = "",
    [switch]$Force
)

$ErrorActionPreference = "Stop"
$Root = (Resolve-Path (Join-Path $PSScriptRoot "..")).Path
if (-not $Venv) { $Venv = Join-Path $Root ".venv" }

function Fail([string]$msg) {
    Write-Host "error: $msg" -ForegroundColor Red
    exit 1
}

function Run([string]$exe, [string[]]$argv) {
    Write-Host "> $exe $($argv -join ' ')" -ForegroundColor DarkGray
    & $exe @argv
    if ($LASTEXITCODE -ne 0) { Fail "'$exe $($argv -join ' ')' failed (exit $LASTEXITCODE)" }
}

function Quiet([string]$exe, [string[]]$argv) {
    # a native command whose failure is an answer, not an error (stderr dropped, never throws)
    $old = $ErrorActionPreference
    $ErrorActionPreference = "Continue"
    try {
        $out = & $exe @argv 2>$null
        if ($LASTEXITCODE -eq 0 -and $out) { return ($out | Select-Object -Last 1).ToString().Trim() }
    } catch {
    } finally {
        $ErrorActionPreference = $old
    }
    return $null
}

# --- 1. Python 3.11 ------------------------------------------------------------------------------
$pyExe = $null
if ($Python) {
    $pyExe = $Python
} elseif (Get-Command py -ErrorAction SilentlyContinue) {
    $pyExe = Quiet "py" @("-3.11", "-c", "import sys; print(sys.executable)")
}
if (-not $pyExe -and (Get-Command python -ErrorAction SilentlyContinue)) {
    $pyExe = (Get-Command python).Source
}
if (-not $pyExe) { Fail "Python 3.11 not found. Install it from python.org (TouchDesigner 2023 uses 3.11), then re-run." }
$ver = Quiet $pyExe @("-c", "import sys; print('%d.%d' % sys.version_info[:2])")
if ($ver -ne "3.11") {
    Fail "$pyExe is Python $ver; TouchDesigner needs packages built for 3.11. Install Python 3.11 or pass -Python C:\path\to\python3.11.exe"
}
Write-Host "Python 3.11: $pyExe"

# --- 2. venv -------------------------------------------------------------------------------------
$vpy = Join-Path $Venv "Scripts\python.exe"
if ((Test-Path $Venv) -and $Force) {
    Write-Host "removing $Venv"
    Remove-Item -Recurse -Force $Venv
}
if (Test-Path $vpy) {
    $vver = Quiet $vpy @("-c", "import sys; print('%d.%d' % sys.version_info[:2])")
    if ($vver -ne "3.11") { Fail "$Venv exists with Python $($vver): pass -Force to re-create it, or -Venv <other folder>" }
    Write-Host "using the existing venv $Venv"
} else {
    Run $pyExe @("-m", "venv", $Venv)
}
Run $vpy @("-m", "pip", "install", "--upgrade", "pip")

# --- 3. numpy pinned to TouchDesigner's, then CUDA torch and this package under that pin ------------
function Find-TdNumpy {
    # TD's bundled numpy: ask TD's own python.exe, else read the dist-info folder name
    $dirs = @()
    if ($TouchDesigner) { $dirs += $TouchDesigner }
    else {
        $base = Join-Path $env:ProgramFiles "Derivative"
        if (Test-Path $base) {
            $dirs += Get-ChildItem $base -Directory -Filter "TouchDesigner*" | Sort-Object LastWriteTime -Descending | ForEach-Object { $_.FullName }
        }
    }
    foreach ($d in $dirs) {
        $tdpy = Join-Path $d "bin\python.exe"
        if (Test-Path $tdpy) {
            $v = Quiet $tdpy @("-c", "import numpy; print(numpy.__version__)")
            if ($v) { return @($v, $d) }
        }
        $info = Get-ChildItem (Join-Path $d "bin\Lib\site-packages") -Directory -Filter "numpy-*.dist-info" -ErrorAction SilentlyContinue | Select-Object -First 1
        if ($info -and $info.Name -match "^numpy-(.+)\.dist-info$") { return @($Matches[1], $d) }
    }
    return $null
}
if ($Numpy) {
    $numpySpec = "numpy==$Numpy"
    Write-Host "numpy pinned to $Numpy (-Numpy)"
} else {
    $found = Find-TdNumpy
    if ($found) {
        $numpySpec = "numpy==$($found[0])"
        Write-Host "numpy pinned to $($found[0]), the version TouchDesigner bundles ($($found[1]))"
    } else {
        $numpySpec = "numpy>=1.24,<2"
        Write-Host "warning: TouchDesigner's numpy version not found; using '$numpySpec'. Pass -TouchDesigner <folder> or -Numpy <version> to pin it exactly." -ForegroundColor Yellow
    }
}
$constraints = Join-Path $Venv "td-constraints.txt"
[System.IO.File]::WriteAllText($constraints, "$numpySpec`n")
Run $vpy @("-m", "pip", "install", $numpySpec)
Run $vpy @("-m", "pip", "install", $Torch, "--index-url", "https://download.pytorch.org/whl/$Cuda", "-c", $constraints)
# [remote]: the client of `live-upscale serve` (a cloud GPU), selectable as the TOP's "remote" backend
Run $vpy @("-m", "pip", "install", "-e", "$($Root)[remote]", "-c", $constraints)

# --- 4. nvidia-vfx (optional) --------------------------------------------------------------------
if ($Rtx) {
    Write-Host "installing nvidia-vfx from NVIDIA's package index (several hundred MB: it carries the SDK and its models)"
    & $vpy -m pip install --extra-index-url https://pypi.nvidia.com nvidia-vfx -c $constraints
    if ($LASTEXITCODE -ne 0) {
        Write-Host "warning: nvidia-vfx did not install; the other backends still work. Retry with:" -ForegroundColor Yellow
        Write-Host "  $vpy -m pip install --extra-index-url https://pypi.nvidia.com nvidia-vfx" -ForegroundColor Yellow
    }
}

# --- 5. what can run here -------------------------------------------------------------------------
$cudaOk = Quiet $vpy @("-c", "import torch; print(torch.cuda.is_available())")
if ($cudaOk -ne "True") {
    Write-Host "warning: torch sees no CUDA GPU: update the NVIDIA driver, or pick another -Cuda tag (cu126 for older drivers)." -ForegroundColor Yellow
}
& $vpy -m live_upscale doctor

# --- 6. the TD side ---------------------------------------------------------------------------------
$site = Quiet $vpy @("-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if (-not $site) { Fail "could not ask the venv for its site-packages folder" }
$template = Join-Path $PSScriptRoot "td_script_top_callbacks.py"
$callbacks = Join-Path $Venv "live_upscale_td_callbacks.py"
$text = Get-Content -Raw $template
$text = $text.Replace('LIVE_UPSCALE_SITE = r""', "LIVE_UPSCALE_SITE = r`"$site`"")
[System.IO.File]::WriteAllText($callbacks, $text)  # UTF-8 without a BOM (a BOM would break TD's DAT)

Write-Host ""
Write-Host "Done. In TouchDesigner:" -ForegroundColor Green
Write-Host "  - add this line where TD runs Python at start (an Execute DAT's onStart), or leave it to the callbacks file:"
Write-Host "      import sys; sys.path.append(r'$site')" -ForegroundColor Cyan
Write-Host "    (append, not insert(0, ...): TD's own numpy and other bundled modules stay first; the venv's numpy is pinned to TD's version anyway)"
Write-Host "  - later installs into this venv: add  -c $constraints  so pip keeps numpy at TD's version"
Write-Host "  - Script TOP callbacks, venv path already filled in: point the callbacks DAT's File parameter at"
Write-Host "      $callbacks" -ForegroundColor Cyan
Write-Host "  - on the Script TOP, pulse Setup Parameters: the Upscale and Info pages appear."
