@echo off
rem live-upscale for TouchDesigner: runs setup.ps1 next to this file. Arguments pass through, e.g.  setup.bat -Rtx
powershell -NoProfile -ExecutionPolicy Bypass -File "%~dp0setup.ps1" %*
exit /b %ERRORLEVEL%
