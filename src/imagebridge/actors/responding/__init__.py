"""Responding Gateway: XCPD [ITI-55], XCA [ITI-38, ITI-39] and XCA-I [RAD-75] responders."""
