package main

import "github.com/urfave/cli/v2"

func mountCommand() *cli.Command {
	return &cli.Command{Name: "mount", Hidden: true, Action: func(*cli.Context) error { return usagef("mount: not yet built") }}
}

func unmountCommand() *cli.Command {
	return &cli.Command{Name: "unmount", Hidden: true, Action: func(*cli.Context) error { return usagef("unmount: not yet built") }}
}
