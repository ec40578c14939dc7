"""ebRIM/ebRS codecs for XCA (ITI-38, ITI-39) and XCA-I (RAD-69, RAD-75)."""
