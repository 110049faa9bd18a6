"""The profiler's checkpoints, named as OPNFV Doctor's (T00 fault occurred ... T09
consumer received) plus the verdict and recovery's: one enumeration for every block
that stamps them."""

from __future__ import annotations

import enum


class Mark(enum.StrEnum):
    T00 = "T00"  # the fault occurred
    T00_ESTIMATE = "T00~"  # its estimate, when nobody knows it: the last sign of life
    T01 = "T01"  # raw failure received
    V = "V"  # verdict: the suspicion confirmed
    T02 = "T02"  # affected resources found
    T03 = "T03"  # host marked down
    T04 = "T04"  # servers set to error
    T05 = "T05"  # ports set DOWN
    T06 = "T06"  # event emitted
    T07 = "T07"  # alarm evaluated
    T08 = "T08"  # alarm fired
    T09 = "T09"  # alarm received
    R1 = "R1"  # fencing confirmed
    R2 = "R2"  # first evacuation requested
    R3 = "R3"  # all servers recovered
