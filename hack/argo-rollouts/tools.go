//go:build tools

// Package tools pins the Argo Rollouts controller that `make bench` runs beside Pilotboat.
package tools

import (
	_ "github.com/argoproj/argo-rollouts/cmd/rollouts-controller"
)
