// Package tunnel is oevpn's engine: it joins a packet device (the OS TUN or a
// userspace netstack), the outer UDP transport on the IKE and NAT-T ports, and
// the ESP security associations the control plane installs.
//
// Outbound flow (routineOutbound):
//  1. read a batch of packets from the device, each at offset esp.Headroom;
//  2. find the SA pair whose traffic selectors cover each packet (lock-free);
//  3. seal each packet in place;
//  4. send runs of packets for one peer as one batch (sendmmsg, UDP GSO).
//
// Inbound flow (routineInbound, one per socket):
//  1. receive a batch of datagrams (recvmmsg, UDP GRO);
//  2. demultiplex: IKE and probe messages go to the control plane, NAT
//     keepalives are dropped, ESP is looked up by SPI (lock-free);
//  3. open each ESP packet in place;
//  4. drop inner packets outside the SA's traffic selectors;
//  5. write the batch to the device (TUN GRO where the OS has it).
package tunnel
