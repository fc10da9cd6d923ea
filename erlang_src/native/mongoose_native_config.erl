%% @doc Where the library reads MongooseIM's configuration: from
%% `mongoose_config' inside MongooseIM, from this application's environment
%% (`outgoing_pools', `host_types') when it runs on its own.
-module(mongoose_native_config).
-export([outgoing_pools/0, host_types/0, pools_from_toml/1, check_toml/1]).

outgoing_pools() ->
    from_mongooseim(outgoing_pools, fun() ->
        application:get_env(mongoose_native, outgoing_pools, [])
    end).

host_types() ->
    from_mongooseim(host_types, fun() ->
        application:get_env(mongoose_native, host_types, [])
    end).

from_mongooseim(Key, Fallback) ->
    case erlang:function_exported(mongoose_config, get_opt, 1) of
        true -> mongoose_config:get_opt(Key);
        false -> Fallback()
    end.

%% @doc Reads the `[outgoing_pools.TYPE.TAG]' sections of a TOML file into
%% the maps `mongoose_wpool:start_configured_pools/1..3' take.
-spec pools_from_toml(file:filename_all()) -> {ok, [map()]} | {error, term()}.
pools_from_toml(File) ->
    case file:read_file(File) of
        {ok, Text} -> mongoose_native_nif:parse_toml(Text);
        {error, Reason} -> {error, {cannot_read, File, Reason}}
    end.

%% @doc Checks every `[outgoing_pools.TYPE.TAG]' and
%% `[modules.mod_global_distrib]' section of a TOML file as starting them
%% would, without connecting anywhere.
-spec check_toml(file:filename_all()) -> {ok, non_neg_integer()} | {error, term()}.
check_toml(File) ->
    case file:read_file(File) of
        {ok, Text} -> mongoose_native_nif:check_toml(Text);
        {error, Reason} -> {error, {cannot_read, File, Reason}}
    end.
