package tunnel

import "context"

// Env asks podshim for its own process environment, which is what the kubelet
// computed for the pod (env, envFrom, secret and configMap references, downward API,
// service links), as "KEY=value" entries in podshim's order. The server leaves out
// the session token. ctx bounds the whole exchange.
//
// Failures reported by the server are *RemoteError values: CodeError when the
// environment does not fit in one frame ([MaxFrameSize]), CodeBadRequest from a
// podshim too old to know the env op, CodeAuth for a wrong token. Values travel as
// JSON strings, so bytes that are not valid UTF-8 arrive as U+FFFD.
func (c *Client) Env(ctx context.Context) ([]string, error) {
	conn, resp, err := c.roundTrip(ctx, &Request{Op: OpEnv})
	if err != nil {
		return nil, err
	}
	conn.Close()
	return resp.Env, nil
}
