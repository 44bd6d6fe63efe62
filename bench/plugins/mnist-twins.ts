/**
 * The MNIST plugin for bench:serving's real-model figures: its data access and
 * `mnist.MLP` (batched predicts) as they are, beside `mnist.Unbatched`, the same network
 * and codec with an unbatched concurrent predict (one image tensor in, its digits out),
 * so that a trained instance added to either serves the same digits.
 */

import mnist from "../../plugins/mnist/mod.ts";
import type { Network } from "../../plugins/mnist/network.ts";
import { classify } from "../../plugins/mnist/predict.ts";
import { defineModel, definePlugin, type Tensor } from "../../sdk/mod.ts";

const mlp = mnist.models!["mnist.MLP"]!;

export default definePlugin({
  ...mnist,
  models: {
    "mnist.MLP": mlp,
    "mnist.Unbatched": defineModel({
      instantiate: mlp.instantiate,
      serialize: mlp.serialize!,
      deserialize: mlp.deserialize!,
      predict: {
        concurrent: true,
        run: (_ctx, net: Network, [images]) => classify(net, [{ images: (images as Tensor<"float32">).data, probabilities: false }])[0]!,
      },
    }),
  },
});
