"""Hardware: quantisation, the fixed-point emulator, the Loihi 2 resource report and run
configurations.  Reserved for the fixed-point issue; nothing here yet."""
