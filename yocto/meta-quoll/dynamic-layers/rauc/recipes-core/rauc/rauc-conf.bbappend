# RAUC system.conf examples for the Quoll boards: files/<MACHINE>/system.conf is picked by
# the machine override. Adjust the slot devices to your partition layout; the compatible
# string must match your bundles. The files are added for these machines only, so the
# layer changes nothing for any other MACHINE.
FILESEXTRAPATHS:prepend:raspberrypi4-64 := "${THISDIR}/files:"
FILESEXTRAPATHS:prepend:raspberrypi5 := "${THISDIR}/files:"
FILESEXTRAPATHS:prepend:jetson-orin-nano-devkit := "${THISDIR}/files:"
