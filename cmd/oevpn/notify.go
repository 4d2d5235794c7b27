package main

import (
	"net"
	"os"
)

// notifyService tells a service manager that waits for it (systemd's
// Type=notify, sd_notify(3)) about our state, e.g. "READY=1" once the
// endpoint is up and "STOPPING=1" when it shuts down. Without
// NOTIFY_SOCKET it does nothing; a failure to tell is not ours to act on.
func notifyService(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // an abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(state))
}
