%% @doc MongooseIM 5.1.0's Riak API on the `riak' pool `global'/`default'.
%%
%% The exports and answers of MongooseIM's mongoose_riak, which called
%% riakc_pb_socket: objects are riakc's `riakc_obj' record (metadata as a
%% `dict', as riakc_obj's functions read it), data types riakc's `map',
%% `set', `counter', `register', `flag', `hll' and `gset' records, index
%% answers `index_results_v1', search answers `search_results', all plain
%% tuples built here, so riakc's modules work on them where they are
%% loaded and nothing here needs riakc. The pool (native/core/src/drivers/
%% riak) speaks Riak's Protocol Buffers API; this module turns riakc's
%% arguments into its requests and its answers into riakc's shapes.
%%
%% Errors: `{error, notfound}', `{error, {notfound, Type}}' (fetch_type),
%% `{error, Message}' or `{error, {Code, Message}}' for an error the
%% server answered, `{error, unmodified}' (update_type with nothing to
%% send), `{error, timeout}' past the pool's `call_timeout' (or the
%% `Timeout' argument), the pool's `{error, {Kind, Message}}' when no
%% answer came (`no_connection', `connection_lost', ...), and `{error,
%% {bad_request, Message}}' for arguments that cannot be sent.
-module(mongoose_riak).

-export([put/1, put/2]).
-export([get/2, get/3]).
-export([delete/2, delete/3]).
-export([update_type/3, update_type/4]).
-export([fetch_type/2, fetch_type/3]).
-export([list_keys/1]).
-export([list_buckets/1]).
-export([create_new_map/1]).
-export([update_map/2]).
-export([mapred/2]).
-export([search/2, search/3]).
-export([get_index/4]).
-export([get_index_range/5]).

-compile({no_auto_import, [put/2]}).

%% riak_pb_kv_codec's metadata keys.
-define(MD_CTYPE, <<"content-type">>).
-define(MD_CHARSET, <<"charset">>).
-define(MD_ENCODING, <<"content-encoding">>).
-define(MD_VTAG, <<"X-Riak-VTag">>).
-define(MD_LINKS, <<"Links">>).
-define(MD_LASTMOD, <<"X-Riak-Last-Modified">>).
-define(MD_USERMETA, <<"X-Riak-Meta">>).
-define(MD_INDEX, <<"index">>).
-define(MD_DELETED, <<"X-Riak-Deleted">>).
-define(MD_TTL, <<"X-Riak-TTL">>).
%% riak_pb_kv_codec's quorum names on the wire.
-define(UINT_MAX, 16#ffffffff).
%% riakc's default server-side mapred timeout.
-define(MAPRED_TIMEOUT, 60000).

-type bucket() :: binary() | {binary(), binary()}.
-type key() :: binary().
-type riakc_obj() :: tuple().
-type datatype() :: tuple().
-type update() :: {atom(), term(), binary() | undefined} | undefined.
-type riakc_map_op() :: {{binary(), atom()}, fun((datatype()) -> datatype())}.
-type options() :: [atom() | {atom(), term()}].
-export_type([bucket/0, key/0, riakc_obj/0, datatype/0, riakc_map_op/0]).

%%--------------------------------------------------------------------
%% Objects
%%--------------------------------------------------------------------

%% @doc Stores the object's update value and metadata (or its only
%% content) under its bucket and key. Throws `siblings' or `no_value' as
%% riakc does when there is nothing single to store.
-spec put(riakc_obj()) -> ok | {ok, riakc_obj()} | {ok, key()} | {error, term()}.
put(Obj) ->
    put(Obj, []).

-spec put(riakc_obj(), timeout() | options()) ->
          ok | {ok, riakc_obj()} | {ok, key()} | {error, term()}.
put({riakc_obj, Bucket, Key, Vclock, _, _, _} = Obj, OptsOrTimeout) ->
    {Type, B} = split_bucket(Bucket),
    {Opts, Timeout} = opts_or_timeout(OptsOrTimeout),
    Content = encode_content(update_metadata(Obj), update_value(Obj)),
    Request = {put, Type, B, Key, Vclock, Content, put_options(Opts)},
    case call(Request, Timeout) of
        {ok, NewKey, undefined, []} when is_binary(NewKey) -> {ok, NewKey};
        {ok, NewKey, NewVclock, Contents} ->
            ReturnKey = case NewKey of
                            undefined -> Key;
                            _ -> NewKey
                        end,
            {ok, new_obj(Bucket, ReturnKey, NewVclock, Contents)};
        Other -> Other
    end;
put(Other, _) ->
    bad_request("not a riakc_obj: ~0tp", [Other]).

-spec get(bucket(), key()) -> {ok, riakc_obj()} | {error, term()}.
get(Bucket, Key) ->
    get(Bucket, Key, []).

-spec get(bucket(), key(), options() | timeout()) -> {ok, riakc_obj()} | unchanged | {error, term()}.
get(Bucket, Key, OptsOrTimeout) ->
    {Type, B} = split_bucket(Bucket),
    {Opts, Timeout} = opts_or_timeout(OptsOrTimeout),
    case call({get, Type, B, Key, get_options(Opts)}, Timeout) of
        {ok, Vclock, Contents} -> {ok, new_obj(Bucket, Key, Vclock, Contents)};
        Other -> Other
    end.

-spec delete(bucket(), key()) -> ok | {error, term()}.
delete(Bucket, Key) ->
    delete(Bucket, Key, []).

-spec delete(bucket(), key(), options() | timeout()) -> ok | {error, term()}.
delete(Bucket, Key, OptsOrTimeout) ->
    {Type, B} = split_bucket(Bucket),
    {Opts, Timeout} = opts_or_timeout(OptsOrTimeout),
    call({delete, Type, B, Key, delete_options(Opts)}, Timeout).

%% @doc Every key of a bucket; Riak streams them, the pool gathers them.
-spec list_keys(bucket()) -> {ok, [key()]} | {error, term()}.
list_keys(Bucket) ->
    {Type, B} = split_bucket(Bucket),
    call({list_keys, Type, B, []}, default).

%% @doc Every bucket of a bucket type.
-spec list_buckets(binary()) -> {ok, [binary()]} | {error, term()}.
list_buckets(Type) ->
    call({list_buckets, Type, []}, default).

%%--------------------------------------------------------------------
%% Data types
%%--------------------------------------------------------------------

-spec update_type({binary(), binary()}, binary() | undefined, update()) ->
          ok | {ok, binary()} | {ok, datatype()} | {ok, binary(), datatype()} | {error, term()}.
update_type(Bucket, Key, Update) ->
    update_type(Bucket, Key, Update, []).

%% @doc Sends a data type's pending operation, as `riakc_map:to_op/1' and
%% its kin make it (`{Type, Op, Context}'; `undefined' when nothing changed).
-spec update_type({binary(), binary()}, binary() | undefined, update(), options()) ->
          ok | {ok, binary()} | {ok, datatype()} | {ok, binary(), datatype()} | {error, term()}.
update_type(_Bucket, _Key, undefined, _Options) ->
    {error, unmodified};
update_type({BType, Bucket}, Key, {DType, Op, Context}, Options) ->
    Request = {dt_update, BType, Bucket, Key, Context, DType, Op, dt_options(update, Options)},
    case call(Request, default) of
        {ok, {T, V, C}} -> {ok, new_type(T, V, C)};
        {ok, K, {T, V, C}} -> {ok, K, new_type(T, V, C)};
        Other -> Other
    end;
update_type(Bucket, _Key, _Update, _Options) ->
    bad_request("data types live in a typed bucket {Type, Bucket}, got ~0tp", [Bucket]).

-spec fetch_type({binary(), binary()}, binary()) -> {ok, datatype()} | {error, term()}.
fetch_type(Bucket, Key) ->
    fetch_type(Bucket, Key, []).

-spec fetch_type({binary(), binary()}, binary(), options()) -> {ok, datatype()} | {error, term()}.
fetch_type({BType, Bucket}, Key, Options) ->
    case call({dt_fetch, BType, Bucket, Key, dt_options(fetch, Options)}, default) of
        {ok, T, V, C} -> {ok, new_type(T, V, C)};
        Other -> Other
    end;
fetch_type(Bucket, _Key, _Options) ->
    bad_request("data types live in a typed bucket {Type, Bucket}, got ~0tp", [Bucket]).

%% @doc A new riakc map with `Ops' applied, as riakc_map:update/3 does.
-spec create_new_map([riakc_map_op()]) -> datatype().
create_new_map(Ops) ->
    update_map(new_type(map, undefined), Ops).

-spec update_map(datatype(), [riakc_map_op()]) -> datatype().
update_map(Map, Ops) ->
    lists:foldl(fun update_map_op/2, Map, Ops).

%% riakc_map:update/3: the field's pending value (or its fetched value,
%% or a new one) given to Fun, the result kept as the field's update.
update_map_op({{_Name, hll}, _Fun}, _Map) ->
    erlang:error(badarg, ["maps may not contain hll datatype"]);
update_map_op({{_Name, Type} = Field, Fun}, {map, Value, Updates, Removes, Context}) ->
    Current = case orddict:find(Field, Updates) of
                  {ok, Pending} -> Pending;
                  error ->
                      case orddict:find(Field, Value) of
                          {ok, Fetched} -> new_type(Type, Fetched, Context);
                          error -> new_type(Type, Context)
                      end
              end,
    {map, Value, orddict:store(Field, Fun(Current), Updates), Removes, Context}.

%% riakc's Mod:new/1 and Mod:new/2 for each data type, as records.
new_type(counter, _Context) -> {counter, 0, undefined};
new_type(set, Context) -> {set, [], [], [], Context};
new_type(map, Context) -> {map, [], [], [], Context};
new_type(register, _Context) -> {register, <<>>, undefined};
new_type(flag, Context) -> {flag, false, undefined, Context};
new_type(hll, _Context) -> {hll, 0, []};
new_type(gset, Context) -> {gset, [], [], Context}.

new_type(counter, Value, _Context) -> {counter, Value, undefined};
new_type(set, Value, Context) -> {set, ordsets:from_list(Value), [], [], Context};
new_type(map, Value, Context) -> {map, orddict:from_list(Value), [], [], Context};
new_type(register, Value, _Context) -> {register, Value, undefined};
new_type(flag, Value, Context) -> {flag, Value, undefined, Context};
new_type(hll, Value, _Context) -> {hll, Value, []};
new_type(gset, Value, Context) -> {gset, ordsets:from_list(Value), [], Context}.

%%--------------------------------------------------------------------
%% Queries
%%--------------------------------------------------------------------

%% @doc A MapReduce job (riakc's inputs and query terms, sent as an Erlang
%% term): `{ok, [{Phase, Results}]}' for the phases that kept results.
-spec mapred(term(), [term()]) -> {ok, [{non_neg_integer(), [term()]}]} | {error, term()}.
mapred(Inputs, Query) ->
    Job = [{inputs, mapred_inputs(Inputs)}, {query, Query}, {timeout, ?MAPRED_TIMEOUT}],
    case call({mapred, term_to_binary(Job), <<"application/x-erlang-binary">>}, default) of
        {ok, Parts} -> {ok, gather_phases(Parts)};
        Other -> Other
    end.

-spec search(binary(), binary()) -> {ok, tuple()} | {error, term()}.
search(Index, Query) ->
    search(Index, Query, []).

%% @doc A search query on `Index': `{ok, #search_results{}}' with each
%% document as `{Index, [{Field, Value}]}'.
-spec search(binary(), binary(), options()) -> {ok, tuple()} | {error, term()}.
search(Index, Query, Opts) ->
    case call({search, Index, Query, Opts}, default) of
        {ok, Docs, MaxScore, NumFound} ->
            {ok, {search_results, [{Index, Fields} || Fields <- Docs], MaxScore, NumFound}};
        Other -> Other
    end.

%% @doc The keys whose secondary index `Index' holds `Key':
%% `{ok, #index_results_v1{}}'.
-spec get_index(bucket(), binary() | {binary_index | integer_index, string()},
                binary() | integer(), options()) -> {ok, tuple()} | {error, term()}.
get_index(Bucket, Index, Key, Opts) ->
    index(Bucket, Index, [Key], fun([K]) -> {eq, K} end, Opts).

%% @doc The keys whose index `Index' holds a value between `StartKey' and
%% `EndKey', both included; with `{return_terms, true}' the matching
%% values too, as `terms'.
-spec get_index_range(bucket(), binary() | {binary_index | integer_index, string()},
                      binary() | integer() | list(), binary() | integer() | list(), options()) ->
          {ok, tuple()} | {error, term()}.
get_index_range(Bucket, Index, StartKey, EndKey, Opts) ->
    index(Bucket, Index, [StartKey, EndKey], fun([S, E]) -> {range, S, E} end, Opts).

index(Bucket, Index, Values, Query, Opts) ->
    {Type, B} = split_bucket(Bucket),
    case lists:keyfind(stream, 1, Opts) of
        {stream, true} -> bad_request("streamed index queries are not supported", []);
        _ ->
            IndexOpts = [O || {K, _} = O <- Opts, K =/= stream],
            Request = {index, Type, B, index_name(Index), Query([encode_2i(V) || V <- Values]),
                       IndexOpts},
            case call(Request, default) of
                {ok, Keys, Results, Cont} ->
                    ReturnTerms = proplists:get_value(return_terms, Opts),
                    {ok, index_results(ReturnTerms, Keys, Results, Cont)};
                Other -> Other
            end
    end.

%% riakc's process_index_response/3 and index_stream_result_to_index_result/1.
index_results(true, [], Results, Cont) ->
    {index_results_v1, undefined, [{V, K} || {V, K} <- Results], Cont};
index_results(_, Keys, _Results, Cont) ->
    {index_results_v1, Keys, undefined, Cont}.

index_name({binary_index, Name}) -> list_to_binary(Name ++ "_bin");
index_name({integer_index, Name}) -> list_to_binary(Name ++ "_int");
index_name(Name) -> Name.

encode_2i(V) when is_integer(V) -> integer_to_binary(V);
encode_2i(V) when is_list(V) -> list_to_binary(V);
encode_2i(V) -> V.

mapred_inputs({index, Bucket, Name, Key}) ->
    {index, Bucket, index_name(Name), encode_2i(Key)};
mapred_inputs({index, Bucket, Name, Start, End}) ->
    {index, Bucket, index_name(Name), encode_2i(Start), encode_2i(End)};
mapred_inputs(Inputs) ->
    Inputs.

%% riakc's wait_for_mapred: results per phase in arrival order, phases sorted.
gather_phases(Parts) ->
    Acc = lists:foldl(fun({Phase, Data}, Acc0) ->
                              Results = decode_mapred(Data),
                              orddict:append_list(Phase, Results, Acc0)
                      end, orddict:new(), Parts),
    orddict:to_list(Acc).

decode_mapred(Data) ->
    try binary_to_term(Data)
    catch _:Error -> [{error, Error}]
    end.

%%--------------------------------------------------------------------
%% riakc_obj and riak_pb_kv_codec
%%--------------------------------------------------------------------

new_obj(Bucket, Key, Vclock, Contents) ->
    {riakc_obj, Bucket, Key, Vclock, [decode_content(C) || C <- Contents], undefined, undefined}.

update_metadata({riakc_obj, _, _, _, Contents, undefined, _}) ->
    case Contents of
        [] -> dict:new();
        [{MD, _}] -> MD;
        _ -> throw(siblings)
    end;
update_metadata({riakc_obj, _, _, _, _, MD, _}) ->
    MD.

update_value({riakc_obj, _, _, _, Contents, _, undefined}) ->
    case Contents of
        [] -> throw(no_value);
        [{_, V}] -> V;
        _ -> throw(siblings)
    end;
update_value({riakc_obj, _, _, _, _, _, V}) ->
    V.

%% riak_pb_kv_codec:encode_content/1, into the pool's field list.
encode_content(MD0, Value0) ->
    {MD, Value} = case is_binary(Value0) of
                      true -> {MD0, Value0};
                      false -> {dict:store(?MD_CTYPE, "application/x-erlang-binary", MD0),
                                term_to_binary(Value0)}
                  end,
    {lists:flatmap(fun encode_meta/1, dict:to_list(MD)), Value}.

encode_meta({?MD_CTYPE, V}) -> [{content_type, text(V)}];
encode_meta({?MD_CHARSET, V}) -> [{charset, text(V)}];
encode_meta({?MD_ENCODING, V}) -> [{content_encoding, text(V)}];
encode_meta({?MD_VTAG, V}) -> [{vtag, text(V)}];
encode_meta({?MD_LINKS, Links}) -> [{links, [{B, K, text(T)} || {{B, K}, T} <- Links]}];
encode_meta({?MD_LASTMOD, {MS, S, US}}) -> [{last_mod, MS * 1000000 + S}, {last_mod_usecs, US}];
encode_meta({?MD_USERMETA, Pairs}) -> [{usermeta, [{text(K), text(V)} || {K, V} <- Pairs]}];
encode_meta({?MD_INDEX, Pairs}) -> [{indexes, [{K, encode_2i(V)} || {K, V} <- Pairs]}];
encode_meta({?MD_DELETED, V}) -> [{deleted, lists:member(V, [<<"true">>, "true", true])}];
encode_meta({?MD_TTL, V}) -> [{ttl, V}];
encode_meta(_Unknown) -> [].

text(V) when is_binary(V) -> V;
text(V) when is_list(V) -> unicode:characters_to_binary(V);
text(V) when is_atom(V) -> atom_to_binary(V);
text(V) when is_integer(V) -> integer_to_binary(V);
text(V) -> V.

%% riak_pb_kv_codec:decode_content/1.
decode_content({Fields, Value}) ->
    Usecs = proplists:get_value(last_mod_usecs, Fields, 0),
    MD = lists:flatmap(fun(F) -> decode_meta(F, Usecs) end, Fields),
    {dict:from_list(MD), Value}.

decode_meta({content_type, V}, _) -> [{?MD_CTYPE, binary_to_list(V)}];
decode_meta({charset, V}, _) -> [{?MD_CHARSET, binary_to_list(V)}];
decode_meta({content_encoding, V}, _) -> [{?MD_ENCODING, binary_to_list(V)}];
decode_meta({vtag, V}, _) -> [{?MD_VTAG, binary_to_list(V)}];
decode_meta({links, Links}, _) -> [{?MD_LINKS, [{{B, K}, T} || {B, K, T} <- Links]}];
decode_meta({last_mod, LastMod}, Usecs) ->
    [{?MD_LASTMOD, {LastMod div 1000000, LastMod rem 1000000, Usecs}}];
decode_meta({last_mod_usecs, _}, _) -> [];
decode_meta({usermeta, Pairs}, _) -> [{?MD_USERMETA, Pairs}];
decode_meta({indexes, Pairs}, _) -> [{?MD_INDEX, Pairs}];
decode_meta({deleted, V}, _) -> [{?MD_DELETED, V}];
decode_meta({ttl, V}, _) -> [{?MD_TTL, V}].

%%--------------------------------------------------------------------
%% Options, as riakc_pb_socket and riak_pb_dt_codec read them
%%--------------------------------------------------------------------

opts_or_timeout(Timeout) when is_integer(Timeout); Timeout =:= infinity -> {[], Timeout};
opts_or_timeout(Opts) when is_list(Opts) -> {Opts, default}.

get_options(Opts) ->
    [get_option(O) || O <- Opts].

get_option({r, Q}) -> {r, quorum(Q)};
get_option({pr, Q}) -> {pr, quorum(Q)};
get_option(head) -> {head, true};
get_option(deletedvclock) -> {deletedvclock, true};
get_option(O) -> O.

put_options(Opts) ->
    [put_option(O) || O <- Opts].

put_option({Q, V}) when Q =:= w; Q =:= dw; Q =:= pw -> {Q, quorum(V)};
put_option(Flag) when Flag =:= return_body; Flag =:= return_head; Flag =:= if_not_modified;
                      Flag =:= if_none_match; Flag =:= asis -> {Flag, true};
put_option(O) -> O.

delete_options(Opts) ->
    [delete_option(O) || O <- Opts].

delete_option({Q, V}) when Q =:= rw; Q =:= r; Q =:= w; Q =:= pr; Q =:= pw; Q =:= dw ->
    {Q, quorum(V)};
delete_option(O) -> O.

%% riak_pb_dt_codec's fetch and update options; it skips the others.
dt_options(Kind, Opts) ->
    Known = case Kind of
                fetch -> [r, pr, basic_quorum, notfound_ok, timeout, sloppy_quorum, n_val,
                          include_context];
                update -> [w, dw, pw, return_body, timeout, sloppy_quorum, n_val, include_context]
            end,
    [O || {K, _} = O <- lists:flatmap(fun dt_option/1, Opts), lists:member(K, Known)].

dt_option({Q, V}) when Q =:= r; Q =:= pr; Q =:= w; Q =:= dw; Q =:= pw -> [{Q, quorum(V)}];
dt_option(Flag) when Flag =:= basic_quorum; Flag =:= notfound_ok; Flag =:= return_body;
                     Flag =:= sloppy_quorum; Flag =:= include_context -> [{Flag, true}];
dt_option({Flag, B} = O) when is_boolean(B), (Flag =:= basic_quorum orelse Flag =:= notfound_ok
                                              orelse Flag =:= return_body
                                              orelse Flag =:= sloppy_quorum
                                              orelse Flag =:= include_context) -> [O];
dt_option({K, _} = O) when K =:= timeout; K =:= n_val -> [O];
dt_option(_) -> [].

%% riak_pb_kv_codec:encode_quorum/1.
quorum(one) -> ?UINT_MAX - 1;
quorum(quorum) -> ?UINT_MAX - 2;
quorum(all) -> ?UINT_MAX - 3;
quorum(default) -> ?UINT_MAX - 4;
quorum(N) -> N.

%%--------------------------------------------------------------------
%% The pool
%%--------------------------------------------------------------------

split_bucket({Type, Bucket}) -> {Type, Bucket};
split_bucket(Bucket) -> {undefined, Bucket}.

%% The worker itself gives a request up half a second past the pool's
%% call_timeout (and replaces its connection), whatever the caller waits.
call(Request, Timeout) ->
    try
        case Timeout of
            default -> mongoose_wpool:call(riak, global, default, Request);
            _ -> mongoose_wpool:call_with_timeout(riak, global, default, Request, Timeout)
        end
    of
        {error, {timeout, _}} -> {error, timeout};
        Result -> Result
    catch
        exit:{timeout, _} -> {error, timeout};
        exit:no_available_workers -> {error, no_available_workers}
    end.

bad_request(Format, Args) ->
    {error, {bad_request, iolist_to_binary(io_lib:format(Format, Args))}}.
