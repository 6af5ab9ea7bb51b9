package backend

import "layerd.dev/layerd/test/rpmostreed/server"

// The request and progress types are the server's (test/rpmostreed/server).
type (
	StageRequest     = server.StageRequest
	FinalizeRequest  = server.FinalizeRequest
	Progress         = server.Progress
	DownloadProgress = server.DownloadProgress
)

var _ server.Backend = (*Backend)(nil)
