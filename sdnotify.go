package main

import (
	"net"
	"os"
)

// sdNotify tells systemd about the service's state (Type=notify units):
// "READY=1" once the mount answers, "STOPPING=1" on the way out. Outside
// systemd (no NOTIFY_SOCKET) it does nothing.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:] // an abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}
