package store_test

import (
	"testing"

	"github.com/theater-storefs/theater-storefs/store"
	"github.com/theater-storefs/theater-storefs/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Backend { return storetest.OpenLocal(t) })
}

func TestCopy(t *testing.T) {
	storetest.RunCopy(t, storetest.OpenLocal(t), storetest.OpenLocal(t), storetest.OpenLocal(t))
}
