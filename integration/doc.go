// Package integration drives the real theater-storefs binary: TestMain
// builds it once, and each test mounts a store into a temporary directory
// through the command line and works on the mount with ordinary tools (ls,
// cat, cp, mv, rm, dd, sed, truncate, touch, getfattr) run by sh. After each
// gesture the test checks both what the mount shows and what the store's
// own files (data/, labels/, tmp/) hold.
//
// The tests need FUSE: /dev/fuse, and root or fusermount3. Without it they
// skip, saying why.
//
// TestCrashLoop and TestConcurrencySoak run short under go test; with
// THEATER_STOREFS_LONG=1 (make soak) they run long: 50 kills of the server,
// a minute of concurrent writers. THEATER_STOREFS_SEED replays their random
// choices.
package integration
