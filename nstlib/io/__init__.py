"""Everything that touches files and the network: pictures (`images`), bundled samples and paintings (`data`), network
weights (`weights`), downloads (`download`) and safe file writes (`files`)."""
