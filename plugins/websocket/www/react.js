// useLivehub: a React hook over livehub.js (docs/CLIENT.md). React is passed in or imported by
// the page's bundler, so this file has no dependency of its own:
//   import * as React from "react";
//   import {makeUseLivehub} from "livehub/react.js";
//   const useLivehub = makeUseLivehub(React);
//   const {state, client} = useLivehub({url, pollUrl, getToken}, {
//     "assignment:created": (data) => toast(data.signalIdentifier),
//   });
import {connect} from "./livehub.js";

/** Returns a hook bound to the given React: useLivehub(options, handlers, deps?). */
export function makeUseLivehub(React) {
  const {useEffect, useRef, useState} = React;
  return function useLivehub(options, handlers = {}, deps = []) {
    const [state, setState] = useState("offline");
    const [client, setClient] = useState(null);
    const handlersRef = useRef(handlers);
    handlersRef.current = handlers;
    const key = JSON.stringify({url: options.url, pollUrl: options.pollUrl,
      namespace: options.namespace, token: options.token, types: options.types});
    useEffect(() => {
      const hub = connect(options);
      setClient(hub);
      setState(hub.state);
      const offs = [hub.on("$state", setState)];
      for (const pattern of Object.keys(handlersRef.current)) {
        offs.push(hub.on(pattern, (...args) => {
          const handler = handlersRef.current[pattern];
          if (handler) handler(...args);
        }));
      }
      return () => {
        offs.forEach((off) => off());
        hub.close();
      };
      // eslint-disable-next-line react-hooks/exhaustive-deps
    }, [key, Object.keys(handlers).join("\n"), ...deps]);
    return {state, client, isLive: state === "live"};
  };
}

export default makeUseLivehub;
