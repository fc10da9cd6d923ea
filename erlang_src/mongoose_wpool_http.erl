%% @doc Callbacks of the `http' pool type. The connection options
%% (`host', `path_prefix', `request_timeout', `tls') are read and applied in
%% the NIF, so nothing is kept here; every strategy is supported.
-module(mongoose_wpool_http).
-export([init/0, start/4, stop/2, is_supported_strategy/1]).

init() -> ok.

start(HostType, Tag, WpoolOpts, ConnOpts) ->
    mongoose_wpool:start(http, HostType, Tag, WpoolOpts, ConnOpts).

stop(HostType, Tag) ->
    mongoose_wpool:stop(http, HostType, Tag).

is_supported_strategy(_) -> true.
