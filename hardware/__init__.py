"""keycam hardware layer: the physical parts and their faithful simulations.

camera/              Camera interface (base), ReplayCamera (replay, idx, samples), Picamera2Camera
                     (raspberrypi: raw, linear), the CAMERAS registry and make_camera
faceplate.py         SerialFaceplate: host driver of the faceplate actuator (PROTOCOL.md)
protocol.py          the actuator's line protocol (framing, CRC-16, commands, error codes, EMPTY_SLOT)
faceplate_state.py   FaceplateStatus / FaceplateIdentity records and the one faceplate check, problems()
faceplate_firmware.py / faceplate_emulator.py   the actuator firmware and its pty emulator with faults
preadc.py, optics.py simulated pre-ADC stage: fiber optics, sensor key A0, noise, ADC
digitise.py          key_and_digitise (plain frames -> keyed ADC codes, as the device) and model_input
cli.py               `keycam hw`
Nothing here imports tools/ or torch.
"""
