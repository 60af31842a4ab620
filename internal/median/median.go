// Package median is the one statistic the benchmark tools report.
package median

import "slices"

// Of returns the median of v, or 0 for none.
func Of(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
