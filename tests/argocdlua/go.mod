// argocd-lua: Argo CD's Lua sandbox for health scripts (gopher-lua, configured as Argo CD configures it), for
// tests/argocd_health.rs. Nothing here ships with the operator.
module github.com/jpki-access/jpki-access/tests/argocdlua

go 1.26.0

require github.com/yuin/gopher-lua v1.1.2
