# RAUC system.conf examples for the Quoll boards: files/<MACHINE>/system.conf is picked by
# the machine override. Adjust the slot devices to your partition layout; the compatible
# string must match your bundles.
FILESEXTRAPATHS:prepend := "${THISDIR}/files:"
