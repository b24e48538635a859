"""Everything that touches files and the network: pictures, samples and paintings, weights, downloads, safe writes."""
