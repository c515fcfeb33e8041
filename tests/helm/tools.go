//go:build tools

// Package tools pins helm's command so `go build helm.sh/helm/v3/cmd/helm` builds the version in go.mod.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
