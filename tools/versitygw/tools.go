//go:build tools

// Package tools pins versitygw, the S3 server the S3 backend's tests run
// against. It lives in its own module so the main module does not take on
// its dependencies.
package tools

import _ "github.com/versity/versitygw/cmd/versitygw"
