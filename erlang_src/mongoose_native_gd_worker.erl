%% @doc The ordered workers incoming global-distribution stanzas reach.
%% Stanzas are decoded with `binary_to_term(Bin, [safe])'; one that does not
%% decode, or whose handler fails, is logged and dropped: the worker goes on.
-module(mongoose_native_gd_worker).
-behaviour(supervisor).
-export([start_sup/2, init/1, start_link/1, loop/1]).

start_sup(Handler, N) ->
    supervisor:start_link(?MODULE, {Handler, N}).

init({Handler, N}) ->
    Children = [#{id => I, start => {?MODULE, start_link, [Handler]}} || I <- lists:seq(1, N)],
    {ok, {#{strategy => one_for_one, intensity => 100, period => 1}, Children}}.

start_link(Handler) ->
    {ok, proc_lib:spawn_link(?MODULE, loop, [Handler])}.

loop(Handler) ->
    receive
        {gd_packet, Host, TransferUs, Key, Bin} ->
            handle(Handler, Host, TransferUs, Key, Bin),
            loop(Handler);
        _ ->
            loop(Handler)
    end.

handle(Handler, Host, TransferUs, Key, Bin) ->
    try binary_to_term(Bin, [safe]) of
        Term ->
            try Handler(Host, TransferUs, Key, Term)
            catch Class:Reason ->
                    logger:warning(#{what => gd_handler_failed, from_host => Host,
                                     class => Class, reason => Reason})
            end
    catch error:badarg ->
            logger:warning(#{what => gd_undecodable_stanza, from_host => Host,
                             size => byte_size(Bin)})
    end.
