@echo off
rem kubectl_complete-tp.cmd: kubectl (1.26 or newer) runs this to complete "kubectl tp ..." on Windows.
rem It asks kubectl-tp.exe beside it, else the one on PATH.
if exist "%~dp0kubectl-tp.exe" goto beside
kubectl-tp.exe __complete %*
exit /b %errorlevel%
:beside
"%~dp0kubectl-tp.exe" __complete %*
