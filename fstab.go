package main

import (
	"fmt"
	"slices"
	"strings"
)

// fstabArgs turns the mount helper's command line into the program's own.
// mount(8) runs a file system of type fuse.theater-storefs (from
// /etc/fstab, or `mount -t fuse.theater-storefs STORE MNT -o ro`) through
// mount.fuse3, which runs
//
//	theater-storefs STORE MOUNTPOINT -o OPTION,OPTION...
//
// That becomes `theater-storefs --store STORE mount [flags] MOUNTPOINT`.
// ok is false for any other command line, which is left alone.
func fstabArgs(args []string, commands []string) (out []string, ok bool, err error) {
	if len(args) < 3 || strings.HasPrefix(args[1], "-") || strings.HasPrefix(args[2], "-") ||
		slices.Contains(commands, args[1]) {
		return nil, false, nil
	}
	source, mnt := args[1], args[2]
	var flags []string
	rest := args[3:]
	for len(rest) > 0 {
		switch a := rest[0]; {
		case a == "-o" && len(rest) > 1:
			f, err := mountOptionFlags(rest[1])
			if err != nil {
				return nil, true, err
			}
			flags = append(flags, f...)
			rest = rest[2:]
		case strings.HasPrefix(a, "-o") && len(a) > 2:
			f, err := mountOptionFlags(a[2:])
			if err != nil {
				return nil, true, err
			}
			flags = append(flags, f...)
			rest = rest[1:]
		case a == "-n" || a == "-v" || a == "-s" || a == "-f":
			// mount(8)'s own: no mtab, verbose, sloppy, fake.
			rest = rest[1:]
		default:
			return nil, true, usagef("mount helper: unexpected argument %q", a)
		}
	}
	out = append([]string{args[0], "--store", source, "mount"}, flags...)
	return append(out, mnt), true, nil
}

// mountOptionFlags maps mount options to the mount command's flags. Options
// that mount(8) and the kernel handle themselves are accepted and dropped.
func mountOptionFlags(opts string) ([]string, error) {
	var flags []string
	for o := range strings.SplitSeq(opts, ",") {
		name, val, _ := strings.Cut(o, "=")
		switch name {
		case "ro":
			flags = append(flags, "--read-only")
		case "allow_other":
			flags = append(flags, "--allow-other")
		case "debug":
			flags = append(flags, "--debug")
		case "foreground":
			flags = append(flags, "--foreground")
		case "log_file":
			flags = append(flags, "--log-file", val)
		case "", "rw", "defaults", "auto", "noauto", "user", "nouser", "users", "_netdev", "nofail",
			"dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "relatime",
			"default_permissions", "x-systemd.automount", "x-systemd.requires", "x-systemd.device-timeout":
			// Handled by mount(8), systemd or always set by the server.
		default:
			if strings.HasPrefix(name, "x-") || strings.HasPrefix(name, "comment") {
				continue
			}
			return nil, usagef("mount option %q is not known (known: ro, allow_other, debug, foreground, log_file=FILE)", fmt.Sprint(name))
		}
	}
	return flags, nil
}
